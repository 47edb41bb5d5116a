"""experiments/study: the arms' configs (validate, build abstractly at their parameter counts),
the `uniform` curriculum (Birdie's grid at equal class weights, no controller), and the results'
verdicts on constructed run files."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType

from birdie_jax.aot import planned_vocab_size
from birdie_jax.config import validate_config
from birdie_jax.data import special_tokens
from birdie_jax.errors import ConfigError
from birdie_jax.models import param_count
from birdie_jax.objectives import grid
from birdie_jax.objectives.registry import CLASSES
from birdie_jax.parallel.mesh import MESH_AXES, resolve_mesh_shape
from birdie_jax.train.mixture_control import CONTROLLED_CURRICULA
from birdie_jax.train.state import make_train_setup
from experiments.study import config as study

CORPUS = os.path.join("..", "shared", "corpus")
PARAMS = {"50m": (30e6, 70e6), "150m": (110e6, 190e6)}


def _abstract_mesh(config) -> AbstractMesh:
  sizes = resolve_mesh_shape(config.mesh.shape, 1)
  return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(MESH_AXES))


def test_arms_cover_the_issue_and_parse_back():
  parsed = [study.parse_arm(a) for a in study.ARMS]
  assert len(set(study.ARMS)) == len(study.ARMS)
  for size in ("50m", "150m"):
    hawk = {(p["curriculum"], p["learning_rate"]) for p in parsed
            if p["size"] == size and p["family"] == "hawk"}
    assert {c for c, _ in hawk} == {"ntp", "ul2", "uniform", "birdie_causal", "birdie"}
    assert len({lr for c, lr in hawk if c == "ntp"}) == 3
  seeds = {(p["family"], p["size"], p["curriculum"]): set() for p in parsed}
  for p in parsed:
    seeds[p["family"], p["size"], p["curriculum"]].add(p["seed"])
  assert len(seeds["hawk", "50m", "ntp"]) >= 2 and len(seeds["hawk", "50m", "birdie"]) >= 2
  assert {("transformer", "50m", "ntp"), ("transformer", "50m", "birdie")} <= set(seeds)
  for name in study.ARMS:  # the name encodes the LR only for ntp, and reads back the same
    p = study.parse_arm(name)
    lr = p["learning_rate"] if p["curriculum"] == "ntp" else None
    assert study.arm_name(p["family"], p["size"], p["curriculum"], p["seed"], lr) == name


@pytest.mark.parametrize("bad", ["hawk-50m-birdie", "hawk-70m-ntp-lr1e-3-s0", "mamba-50m-ntp-s0",
                                 "hawk-50m-ntp-s0", "hawk-50m-birdie-lr1e-3-s0",
                                 "transformer-150m-birdie-s0", "hawk-50m-birdie-s0,huge"])
def test_bad_arm_names_are_rejected(bad):
  with pytest.raises(ValueError):
    study.get_config(bad)


def test_every_arm_validates_with_a_shared_budget_and_tokenizer():
  budgets = {}
  for name in study.ARMS:
    config = study.get_config(name)
    validate_config(config)
    p = study.parse_arm(name)
    assert config.train.seq_len == 2048 and config.model.dtype == "bfloat16"
    assert config.model.bidirectional == (p["curriculum"] in ("birdie", "uniform"))
    assert config.data.tokenizer.model_path == study.TOKENIZER
    assert config.data.source.startswith(CORPUS)
    run = (config.train.steps, config.train.batch_size, config.train.warmup_steps,
           config.train.end_lr_ratio, config.data.source)
    assert budgets.setdefault(p["size"], run) == run, name  # same tokens and schedule per size
    if p["curriculum"] != "ntp":
      assert config.train.learning_rate == study.SIZES[p["size"]].learning_rate
  for size, (steps, batch, _, _, _) in budgets.items():  # at most 4 epochs of ~27M per shard
    assert steps * batch * 2048 <= 4 * 27e6 * len(study.SIZES[size].shards)


def test_corpus_folder_comes_from_the_environment(monkeypatch):
  monkeypatch.setenv(study.CORPUS_ENV, "data/study")
  assert study.get_config("hawk-50m-birdie-s0").data.source == (
      "data/study/gutenberg_train_0.jsonl.zst")
  assert study.get_config("hawk-150m-ul2-s0").data.source == (
      "data/study/gutenberg_train_[01].jsonl.zst")


@pytest.mark.parametrize("name", ["hawk-50m-birdie-s0", "transformer-50m-ntp-lr1e-3-s0",
                                  "hawk-150m-uniform-s0"])
def test_abstract_model_has_the_documented_size(name):
  config = study.get_config(name)
  vocab = planned_vocab_size(config.data)  # reads the committed tokenizer
  assert vocab == study.VOCAB_SIZE
  setup = make_train_setup(config, vocab, _abstract_mesh(config))
  low, high = PARAMS[study.parse_arm(name)["size"]]
  assert setup.num_params == param_count(config.model, vocab)
  assert low <= setup.num_params <= high
  assert f"{setup.num_params:,}" in study.__doc__


def test_tiny_variants_validate_on_bytes():
  for name in study.ARMS:
    config = study.get_config(f"{name},tiny")
    validate_config(config)
    assert config.data.tokenizer.kind == "bytes" and config.model.width == 32
    assert config.train.seq_len <= 128 and config.curriculum == study.parse_arm(name)["curriculum"]


def _build(name: str, seq_len: int = 2048) -> grid.Curriculum:
  return grid.build_curriculum(name, seq_len=seq_len, num_sentinels=special_tokens.NUM_SENTINELS)


@pytest.mark.parametrize("seq_len", [256, 2048])
def test_uniform_is_birdies_grid_at_equal_class_weights(seq_len):
  uniform, birdie = _build("uniform", seq_len), _build("birdie", seq_len)
  assert uniform.configurations == birdie.configurations
  assert uniform.classes == tuple(CLASSES) and len(uniform.classes) == 7
  assert uniform.append_prob == birdie.append_prob == grid.BIRDIE_APPEND_PROB
  per_class = np.bincount(uniform.class_index, weights=uniform.weights)
  np.testing.assert_allclose(per_class, np.full(7, 1 / 7), rtol=1e-12)
  for k in range(7):  # uniform within a class too
    members = uniform.weights[uniform.class_index == k]
    np.testing.assert_allclose(members, np.full(len(members), 1 / 7 / len(members)), rtol=1e-12)
  fixed = _build("fixed_ratio", seq_len)  # not merely every Birdie-grid curriculum's weights
  assert not np.allclose(np.bincount(fixed.class_index, weights=fixed.weights), 1 / 7)


def test_uniform_runs_without_the_controller():
  assert "uniform" not in CONTROLLED_CURRICULA and "birdie" in CONTROLLED_CURRICULA
  config = study.get_config("hawk-50m-uniform-s0")
  validate_config(config)
  config.curriculum = "uniform-typo"
  with pytest.raises(ConfigError, match="curriculum"):
    validate_config(config)
