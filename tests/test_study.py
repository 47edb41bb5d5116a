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
from birdie_jax.controller.settings import CONTROLLED_CURRICULA
from birdie_jax.data import special_tokens
from birdie_jax.errors import ConfigError
from birdie_jax.models import param_count
from birdie_jax.objectives import grid
from birdie_jax.objectives.registry import CLASSES
from birdie_jax.parallel.mesh import MESH_AXES, resolve_mesh_shape
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


# --- results: verdicts on constructed values, and the run files they are read from ---

from birdie_jax.evals import stats  # noqa: E402
from birdie_jax.evals.report import Report, TaskResult  # noqa: E402
from birdie_jax.train.finetune_protocol import (  # noqa: E402
    CurvePoint, FinetuneSettings, LearningRateRun, ProtocolResult, TaskFinetune)
from experiments.study import results, runs  # noqa: E402

NTP, BIRDIE = "hawk-50m-ntp-lr1e-3", "hawk-50m-birdie"


def test_verdicts_win_loss_overlap_and_missing():
  values = {BIRDIE: {"phonebook/steps_to_50": [100, 110, 105], "copying_text": [0.10, 0.12, 0.11],
                     "mqar/steps_to_90": [900, 1400, 1100]},
            NTP: {"phonebook/steps_to_50": [400, 420, 410], "copying_text": [0.50, 0.52, 0.51],
                  "mqar/steps_to_90": [1000, 1500, 1200]}}
  assert results.judge(values, BIRDIE, NTP, "phonebook/steps_to_50").outcome == stats.WIN
  assert results.judge(values, NTP, BIRDIE, "phonebook/steps_to_50").outcome == stats.LOSS
  assert results.judge(values, BIRDIE, NTP, "copying_text").outcome == stats.LOSS
  overlap = results.judge(values, BIRDIE, NTP, "mqar/steps_to_90")
  assert overlap.outcome == stats.INCONCLUSIVE and "overlap" in overlap.reason
  missing = results.judge(values, BIRDIE, "hawk-50m-uniform", "copying_text")
  assert missing.outcome == results.MISSING and "hawk-50m-uniform" in missing.reason
  one_seed = {BIRDIE: {"copying_text": [0.9]}, NTP: {"copying_text": [0.1, 0.11]}}
  assert results.judge(one_seed, BIRDIE, NTP, "copying_text").outcome == stats.INCONCLUSIVE


def test_perplexity_target_is_five_percent_beyond_the_interval():
  ppl = "perplexity/gutenberg_val"
  ntp = {ppl: [20.0, 20.02, 19.98]}
  near = {BIRDIE: {ppl: [20.4, 20.6, 20.5]}, NTP: ntp}  # 2.5% worse: within 5%
  far = {BIRDIE: {ppl: [23.0, 23.2, 22.9]}, NTP: ntp}  # 15% worse
  edge = {BIRDIE: {ppl: [19.0, 23.0, 21.0]}, NTP: ntp}  # straddles 1.05 x 20
  kw = dict(scale_b=results.PPL_TARGET)
  assert results.judge(near, BIRDIE, NTP, ppl, **kw).outcome == stats.WIN
  assert results.judge(far, BIRDIE, NTP, ppl, **kw).outcome == stats.LOSS
  assert results.judge(edge, BIRDIE, NTP, ppl, **kw).outcome == stats.INCONCLUSIVE
  assert results.judge(near, BIRDIE, NTP, ppl).outcome == stats.LOSS  # without the 5%: worse


def test_best_ntp_is_the_lowest_heldout_perplexity():
  ppl = "perplexity/gutenberg_val"
  values = {"hawk-50m-ntp-lr5e-4": {ppl: [30.0]}, "hawk-50m-ntp-lr1e-3": {ppl: [25.0, 26.0]},
            "hawk-50m-ntp-lr2e-3": {ppl: [27.0]}, "hawk-150m-ntp-lr3e-4": {ppl: [10.0]}}
  assert results.best_ntp(values, "hawk", "50m") == "hawk-50m-ntp-lr1e-3"
  assert results.best_ntp(values, "transformer", "50m") is None


def _report(copy16: float) -> dict:
  copy = TaskResult("copying_text", ("accuracy", "exact_match"), "tokens", True,
                    ({"difficulty": 16, "examples": 32, "chance": 0.01, "accuracy": 0.95,
                      "exact_match": copy16},
                     {"difficulty": 64, "examples": 32, "chance": 0.01, "accuracy": 0.75,
                      "exact_match": 0.2}), {"accuracy": 0.85, "exact_match": 0.5}, 1.0)
  story = TaskResult("story_infilling", ("accuracy",), "sentences", True,
                     ({"difficulty": 3, "examples": 32, "chance": 0.25, "accuracy": 0.5},),
                     {"accuracy": 0.4}, 0.25)
  return Report(step=1600, layout="continuation", seq_len=2048, examples=32,
                tasks={"copying_text": copy, "story_infilling": story}).to_json()


def _protocol(steps_to_50_score: float, one_number: float) -> dict:
  def run(lr, final):
    curve = (CurvePoint(0, 0.1, 3.0), CurvePoint(250, steps_to_50_score, 2.0),
             CurvePoint(500, final, 1.0))
    return LearningRateRun("phonebook", lr, 500, 8000, curve, ((500, 1.0),), 20.0, 21.0, 9.0)
  evaluation = TaskResult("phonebook", ("digit_accuracy", "exact_match"), "numbers", True,
                          ({"difficulty": 1, "examples": 32, "chance": 0.1,
                            "digit_accuracy": one_number, "exact_match": 0.5},), {}, 1.0)
  task = TaskFinetune("phonebook", "digit_accuracy", (run(1e-4, 0.6), run(3e-4, 0.8)), 3e-4,
                      evaluation)
  return ProtocolResult(FinetuneSettings(steps=500), {"phonebook": task}).to_json()


def _write_arm(root, arm: str, *, copy16=0.95, mid=0.6, one_number=0.95, ppl=20.0):
  import json  # pylint: disable=import-outside-toplevel
  folder = root / arm
  (folder / "eval").mkdir(parents=True)
  (folder / "finetune").mkdir()
  (folder / "eval" / "800.json").write_text(json.dumps(_report(0.0)))  # older: not read
  (folder / "eval" / "1600.json").write_text(json.dumps(_report(copy16)))
  (folder / "finetune" / "protocol.json").write_text(json.dumps(_protocol(mid, one_number)))
  (folder / "objectives").mkdir()
  (folder / "objectives" / "1600.json").write_text(json.dumps(
      {"step": 1600, "classes": {"copying": {"loss": 0.5, "accuracy": 0.9, "tokens": 10.0}}}))
  (folder / "heldout.json").write_text(json.dumps({"gutenberg_val": {"loss": 3.0,
                                                                     "perplexity": ppl}}))
  (folder / "metrics.jsonl").write_text('{"step": 10, "val_loss": 4.0}\n'
                                        '{"step": 20, "loss": 3.5}\n'
                                        '{"step": 30, "val_loss": 3.2}\n')


def test_arm_metrics_read_the_run_files(tmp_path):
  _write_arm(tmp_path, "hawk-50m-birdie-s0", mid=0.6)
  _write_arm(tmp_path, "hawk-50m-birdie-s1", mid=0.3, ppl=22.0)
  m = runs.arm_metrics(str(tmp_path / "hawk-50m-birdie-s0"))
  assert m[runs.GATE_COPY] == 0.95 and m["copying_text"] == 0.85  # newest report, main metric
  assert m["phonebook/steps_to_50"] == 250 and m["phonebook/steps_to_90"] == 500  # never: steps
  assert m["phonebook/final"] == 0.8 and m[runs.GATE_PHONEBOOK] == 0.95
  assert m["perplexity/gutenberg_val"] == 20.0 and m["val_loss"] == 3.2
  assert m["objectives/copying"] == 0.9
  assert m["story_infilling"] == 0.4 and "passage_qa" not in m  # overall main metric; not run
  values = runs.collect(str(tmp_path), ["hawk-50m-birdie-s0", "hawk-50m-birdie-s1",
                                        "hawk-50m-uniform-s0"])
  assert list(values) == ["hawk-50m-birdie"]
  assert values["hawk-50m-birdie"]["phonebook/steps_to_50"] == [250, 500]
  assert values["hawk-50m-birdie"]["perplexity/gutenberg_val"] == [20.0, 22.0]


def test_run_facts_give_the_card_the_tokens_and_the_steady_throughput(tmp_path):
  """Two starts on one card; the first logged window of each (compile) is left out of the
  medians; MFU is the loop's TFLOP/s against the card's peak."""
  import json  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "hawk-50m-birdie-s0"
  folder.mkdir()
  start = {"devices": 1, "device_kind": "NVIDIA H200", "processes": 1, "jax": "0.11.2"}
  (folder / "run.json").write_text(json.dumps({"starts": [dict(start, step=0),
                                                          dict(start, step=50)]}))
  (folder / "config.json").write_text(json.dumps({"train": {"steps": 100, "batch_size": 32,
                                                            "seq_len": 2048}}))
  windows = [(1, 3e3, 1.0), (25, 600e3, 180.0), (50, 610e3, 183.0), (51, 5e3, 1.5),
             (75, 590e3, 177.0), (100, 605e3, 181.5)]
  (folder / "metrics.jsonl").write_text("".join(
      json.dumps({"step": s, "tokens_per_s": r, "tflops_per_s_per_device": t}) + "\n"
      for s, r, t in windows) + json.dumps({"step": 100, "val_loss": 3.0}) + "\n")
  facts = runs.run_facts(str(folder))
  assert facts["cards"] == ["NVIDIA H200"] and facts["tokens"] == 100 * 32 * 2048
  assert facts["tokens_per_s"] == pytest.approx(602_500)  # median of 590k, 600k, 605k, 610k
  assert facts["mfu"] == pytest.approx(180.75 / 989)
  row = results.runs_table({"hawk-50m-birdie-s0": facts}, {"50m": 27_258_067})[2]
  assert row == ("| hawk-50m-birdie-s0 | NVIDIA H200 | 100 x 32 x 2048 | 6.6M | 27.26M | 0.24 | "
                 "602,500 | 18.3% |")
  assert runs.run_facts(str(tmp_path / "not-started")) is None


def test_results_state_the_gate_first_and_mark_what_it_voids(tmp_path):
  for seed in (0, 1):  # the copy reference (Transformer-Birdie) misses the copy threshold, its
    # NTP twin (the retrieval reference) would pass it: copying rows are uninformative
    _write_arm(tmp_path, f"transformer-50m-ntp-lr1e-3-s{seed}", copy16=0.99)
    _write_arm(tmp_path, f"transformer-50m-birdie-s{seed}", copy16=0.5, one_number=0.1)
    _write_arm(tmp_path, f"hawk-50m-birdie-s{seed}")
    _write_arm(tmp_path, f"hawk-50m-ntp-lr1e-3-s{seed}", ppl=20.0 + seed)
  values = runs.collect(str(tmp_path), study.ARMS)
  text = results.markdown(values)
  body = text.split("\n", 2)[2]
  assert body.startswith("**Sanity gate: FAILED.**")
  assert "copies (transformer-50m-birdie): 0.500 < 0.90" in body
  assert "fine-tuning (transformer-50m-ntp-lr1e-3): 0.950 ≥ 0.90" in body
  rows = results.claims(values, "hawk", "50m", results.gate_of(values))
  a_rows = rows["(a) Birdie vs NTP: retrieval fine-tuning speed and copying"]
  assert {r.metric for r in a_rows if r.uninformative} == {"copying_text"}  # the others: missing
  speed = [r for r in a_rows if r.metric.startswith("phonebook/")]  # the phonebook check passed
  assert speed and all(r.outcome != results.MISSING and not r.uninformative for r in speed)
  c_rows = rows["(c) controller (birdie) vs fixed uniform mixture"]
  assert all(r.outcome == results.MISSING for r in c_rows)  # no uniform arm ran
  # The copy check reads Transformer-Birdie only: it passes with NTP copying nothing.
  for seed in (0, 1):
    _write_arm(tmp_path / "again", f"transformer-50m-ntp-lr1e-3-s{seed}", copy16=0.0)
    _write_arm(tmp_path / "again", f"transformer-50m-birdie-s{seed}", copy16=0.92)
  gate = results.gate_of(runs.collect(str(tmp_path / "again"), study.ARMS))
  assert gate.passed and gate.statement.startswith("**Sanity gate: passed.** The reference runs")
  assert "## hawk 50m" in text and "## hawk 150m" not in text
  assert ("Pre-training learning rates: NTP the best of 1 (1e-3) by Gutenberg-val perplexity "
          "(hawk-50m-ntp-lr1e-3); every other arm at the size's one peak.") in text

