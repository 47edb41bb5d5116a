"""The generate CLI decodes a tiny trained run's latest checkpoint: greedy text is the argmax
continuation of full forward passes, sampling is fixed by its seed; the run's stacked layers,
unstacked, give the same logits and text."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from birdie_jax.data import special_tokens
from birdie_jax.generate import generate_text
from birdie_jax.models.decoding import generate, prompt_batch
from birdie_jax.parallel.sharding import axis_rules
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.trained_run import load_run
from helpers import ROOT, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


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


def _forward(run, params):
  """The run's model at `params` as a jitted full forward pass: batch -> (B, L, V) logits."""
  @jax.jit
  def apply(params, b):
    return run.setup.model(params)(b["inputs"], segment_ids=b["segment_ids"],
                                   positions=b["positions"], prefix_mask=b["prefix_mask"])

  def logits(batch):
    with jax.set_mesh(run.setup.mesh), axis_rules(run.setup.rules):
      return np.asarray(apply(params, batch))

  return logits


def _greedy_by_forward(run, params, prompt_ids, new_tokens):
  """Greedy ids after `prompt_ids` in the prefix layout (prompt read both ways, BEGIN, then
  causal), one full forward pass per token, no cache; and the smallest top-1 vs top-2 logit gap.
  Right-padding to one length keeps one compile: the generated part is causal, padding is in
  segment 0."""
  forward = _forward(run, params)
  ids = list(prompt_ids) + [run.tokenizer.special_id(special_tokens.BEGIN)]
  length = len(ids) + new_tokens
  out, margins = [], []
  for _ in range(new_tokens):
    n = len(ids)
    batch = {"inputs": np.full((1, length), run.tokenizer.pad_id, np.int32),
             "segment_ids": (np.arange(length) < n).astype(np.int32)[None],
             "positions": np.where(np.arange(length) < n, np.arange(length), 0)[None],
             "prefix_mask": (np.arange(length) < len(prompt_ids))[None]}
    batch["inputs"][0, :n] = ids
    last = forward(batch)[0, n - 1]
    top2 = np.sort(last)[-2:]
    out.append(int(np.argmax(last)))
    margins.append(float(top2[1] - top2[0]))
    ids.append(out[-1])
  return out, min(margins)


def test_greedy_decoding_is_the_argmax_of_the_forward_pass(workdir):
  # Random N(0, 0.5^2) params of the run's (stacked, bidirectional) model: the 2-step run, like a
  # freshly initialised one, greedily repeats its last id (the tied embedding's self-similarity
  # dominates), which would not tell a cache bug from a correct decode.
  run = load_run(workdir)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (0.5 * rng.standard_normal(x.shape)).astype(x.dtype),
                        jax.device_get(run.params))
  prompt = run.tokenizer.encode("To be, or not")
  expected, margin = _greedy_by_forward(run, params, prompt, 6)
  assert margin > 1e-4 and len(set(expected)) > 1  # no near-tie; not one id over and over
  batch = prompt_batch([prompt], begin_id=run.tokenizer.special_id(special_tokens.BEGIN),
                       pad_id=run.tokenizer.pad_id)
  with jax.set_mesh(run.setup.mesh), axis_rules(run.setup.rules):
    ids = generate(run.setup.model(params), batch, max_new_tokens=6, rng=jax.random.key(0))
  assert np.asarray(ids)[0].tolist() == expected


def test_generate_text_from_latest_checkpoint(workdir):
  greedy = generate_text(workdir, "To be, or not", max_new_tokens=6)
  run = load_run(workdir)
  batch = prompt_batch([run.tokenizer.encode("To be, or not")],
                       begin_id=run.tokenizer.special_id(special_tokens.BEGIN),
                       pad_id=run.tokenizer.pad_id)
  with jax.set_mesh(run.setup.mesh), axis_rules(run.setup.rules):
    ids = generate(run.setup.model(run.params), batch, max_new_tokens=6, rng=jax.random.key(0),
                   eos_id=run.tokenizer.special_id(special_tokens.EOS), pad_id=run.tokenizer.pad_id)
  assert greedy == run.tokenizer.decode(np.asarray(ids)[0])  # the checkpoint's own decode
  # Top-1 sampling at any temperature is greedy decoding.
  assert generate_text(workdir, "To be, or not", max_new_tokens=6, temperature=1.0, top_k=1,
                       seed=3) == greedy
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


def test_sampling_is_fixed_by_its_seed(workdir):
  def sample(seed):
    return generate_text(workdir, "To be", max_new_tokens=6, temperature=1.0, top_k=5,
                         seed=seed, layout="continuation")

  first = sample(1)
  assert sample(1) == first
  # Six tokens from the top 5 of a 2-step model: three seeds all alike would be a fixed draw.
  assert len({first, sample(2), sample(3)}) > 1


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
    return _forward(run, run.params)(prompt_batch(ids, begin_id=run.tokenizer.special_id(
        special_tokens.BEGIN), pad_id=run.tokenizer.pad_id))

  np.testing.assert_allclose(logits(unstacked), logits(stacked), rtol=1e-5, atol=1e-5)
