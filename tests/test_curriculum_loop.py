"""Short training runs on the Birdie mixture with the controller in the loop: the mixture changes
between evaluations, the plot is written, and a killed run resumes exactly (controller included)."""
import json
import shutil

import numpy as np
import pytest

from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.data.pack_dataset import planner_states
from birdie_jax.objectives.mixture import put_state_weights
from birdie_jax.objectives.mixture import state_weights
from birdie_jax.train.loop import train_and_evaluate
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what runs do, not
# how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _rows(workdir):
  return [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]


def _birdie_config():
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.data.gap = 1
  config.train.steps = 10
  config.train.log_every = 1
  config.checkpoint.every_steps = 4
  config.controller.schedule_scale = 0.01   # evaluations at steps 1, 2, 3, 5, 10
  config.controller.num_candidates = 256    # a smaller controller keeps the test quick
  config.controller.train_steps = 50
  config.controller.hidden = 32
  return config


def test_birdie_run_changes_mixture_and_resumes_exactly(tmp_path):
  config = _birdie_config()
  workdir = tmp_path / "run"
  train_and_evaluate(config, str(workdir))
  rows = _rows(workdir)
  straight = {r["step"]: r for r in rows if "loss" in r}
  assert all(0.0 <= r["padding_fraction"] < 0.5 for r in straight.values())
  evals = {r["step"]: r for r in rows if "reward/total" in r or "mixture_class/copying" in r}
  assert sorted(evals) == [1, 2, 3, 5, 10]
  names = sorted(k for k in evals[1] if k.startswith("mixture/"))
  assert len(names) == 96 and all(f"val_loss/{n[8:]}" in evals[1] for n in names)
  mixtures = np.array([[evals[s][n] for n in names] for s in sorted(evals)])
  np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(mixtures[0], mixtures[1])        # uniform before control starts
  assert np.abs(mixtures[2] - mixtures[1]).max() > 1e-3       # the controller takes over at 3
  assert np.abs(mixtures[4] - mixtures[3]).max() > 1e-3       # and keeps re-choosing
  assert (workdir / "mixture.png").stat().st_size > 10_000

  # The mixture is checkpointed once, in the controller state; the data item holds no weights.
  # Checkpoints written before held them in the data item too: make step 4's such a one (the
  # weights of step 3's update), which must resume the same.
  order = run_curriculum(config).names
  latest = np.maximum([evals[3][f"mixture/{n}"] for n in order], 0.0)
  paths = sorted((workdir / "checkpoints" / "4" / "data").glob("process_*.json"))
  assert paths
  for path in paths:
    saved = json.loads(path.read_text())
    assert planner_states(saved)
    for planner in planner_states(saved):
      assert state_weights(planner) is None
      put_state_weights(planner, latest / latest.sum())
    path.write_text(json.dumps(saved))
  shutil.rmtree(workdir / "checkpoints" / "8")   # killed after the step-4 checkpoint
  shutil.rmtree(workdir / "checkpoints" / "10")
  (workdir / "metrics.jsonl").unlink()
  train_and_evaluate(config, str(workdir))
  resumed = _rows(workdir)
  assert [r["loss"] for r in resumed if "loss" in r] == [straight[s]["loss"] for s in range(5, 11)]
  resumed_evals = {r["step"]: r for r in resumed if "reward/total" in r}
  for step in (5, 10):
    assert {n: resumed_evals[step][n] for n in names} == {n: evals[step][n] for n in names}
