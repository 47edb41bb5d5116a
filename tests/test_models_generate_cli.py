"""The generate CLI samples from a tiny trained run's latest checkpoint; the run's stacked layers,
unstacked, give the same logits and text."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from birdie_jax.data import special_tokens
from birdie_jax.generate import generate_text
from birdie_jax.models.decoding import prompt_batch
from birdie_jax.parallel.sharding import axis_rules
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.trained_run import load_run
from helpers import ROOT, tiny_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 2-step Birdie Gated SSM run (bytes tokenizer) with a checkpoint at step 2, its 4 blocks
  stacked as 2 repeats of (bidirectional, causal)."""
  config = tiny_config()
  config.model.update(family="gated_ssm", bidirectional=True, depth=4, scan_layers=True)
  config.train.steps = 2
  config.train.eval_every = 2
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  path = str(tmp_path_factory.mktemp("run"))
  train_and_evaluate(config, path)
  return path


def test_generate_text_from_latest_checkpoint(workdir):
  greedy = generate_text(workdir, "To be, or not", max_new_tokens=6)
  assert isinstance(greedy, str)
  assert generate_text(workdir, "To be, or not", max_new_tokens=6) == greedy
  sampled = generate_text(workdir, "To be", max_new_tokens=6, temperature=1.0, top_k=5, seed=1,
                          layout="continuation")
  assert isinstance(sampled, str)
  # The run's stacked blocks, unstacked, give the same text; so does the command line (its
  # compile comes from the persistent cache).
  assert generate_text(workdir, "To be, or not", max_new_tokens=6, unstack_layers=True) == greedy
  result = subprocess.run(
      [sys.executable, "-m", "birdie_jax.generate", f"--workdir={workdir}",
       "--prompt=To be, or not", "--max_new_tokens=6", "--unstack_layers"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == greedy + "\n"


def test_generate_cli_reports_a_missing_run_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "birdie_jax.generate", f"--workdir={tmp_path}", "--prompt=x"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"birdie_jax.generate: error: cannot read {tmp_path}/config.json (No such file or "
      "directory): is --workdir a training run?"]


def test_a_run_with_stacked_layers_loads_unstacked_to_the_same_logits(workdir):
  stacked, unstacked = load_run(workdir), load_run(workdir, unstack_layers=True)
  assert stacked.config.model.scan_layers and not unstacked.config.model.scan_layers
  assert "stacked" in stacked.params["blocks"] and "stacked" not in unstacked.params["blocks"]

  def logits(run):
    ids = [run.tokenizer.encode(text) for text in ("To be, or not", "Now is the winter")]
    batch = prompt_batch(ids, begin_id=run.tokenizer.special_id(special_tokens.BEGIN),
                         pad_id=run.tokenizer.pad_id)
    with jax.set_mesh(run.setup.mesh), axis_rules(run.setup.rules):
      model = run.setup.model(run.params)
      return np.asarray(jax.jit(lambda b: model(
          b["inputs"], segment_ids=b["segment_ids"], positions=b["positions"],
          prefix_mask=b["prefix_mask"]))(batch))

  np.testing.assert_allclose(logits(unstacked), logits(stacked), rtol=1e-5, atol=1e-5)
