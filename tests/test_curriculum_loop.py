"""A short training run on the Birdie mixture: it trains, logs padding, and resumes exactly."""
import json
import shutil

import numpy as np

from birdie_jax.train.loop import train_and_evaluate
from helpers import tiny_config


def _rows(workdir):
  return [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]


def test_birdie_curriculum_trains_and_resumes_exactly(tmp_path):
  config = tiny_config()
  config.curriculum = "birdie"
  config.data.gap = 1
  config.train.steps = 4
  config.train.log_every = 1
  config.checkpoint.every_steps = 2
  workdir = tmp_path / "run"
  train_and_evaluate(config, str(workdir))
  straight = {r["step"]: r for r in _rows(workdir) if "loss" in r}
  assert all(0.0 <= r["padding_fraction"] < 0.5 for r in straight.values())
  assert np.isfinite(straight[4]["val_loss"])
  shutil.rmtree(workdir / "checkpoints" / "4")  # killed after the step-2 checkpoint
  (workdir / "metrics.jsonl").unlink()
  train_and_evaluate(config, str(workdir))
  resumed = {r["step"]: r["loss"] for r in _rows(workdir) if "loss" in r}
  assert [resumed[s] for s in (3, 4)] == [straight[s]["loss"] for s in (3, 4)]
