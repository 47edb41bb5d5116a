"""The real training loop: loss falls, checkpoints restore exactly, runs resume where they stopped."""
import json
import shutil

import jax
import numpy as np

import pytest

from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.checkpointing import Checkpointer, param_shapes
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step
from birdie_jax.parallel.sharding import batch_sharding
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_loop_lowers_loss_and_writes_outputs(tmp_path):
  config = tiny_config()
  config.train.steps = 24
  config.train.log_every = 4
  final = train_and_evaluate(config, str(tmp_path))
  losses = _losses(tmp_path)
  assert losses[24] < losses[1] - 0.5
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl", encoding="utf-8")]
  assert {"step", "loss", "learning_rate", "tokens_per_s"} <= set(rows[-1])
  assert final["val_loss"] < 6.0
  assert (tmp_path / "checkpoints" / "24").is_dir()
  assert list((tmp_path / "tensorboard").iterdir())


def test_resumed_run_matches_uninterrupted_run(tmp_path):
  config = tiny_config()
  config.train.steps = 8
  config.train.log_every = 1
  workdir = tmp_path / "run"
  train_and_evaluate(config, str(workdir))
  straight = _losses(workdir)
  # Simulate a run killed after its step-4 checkpoint: drop what came later, start it again.
  shutil.rmtree(workdir / "checkpoints" / "8")
  (workdir / "metrics.jsonl").unlink()
  train_and_evaluate(config, str(workdir))
  resumed = _losses(workdir)
  assert min(resumed) == 5
  assert [resumed[s] for s in range(5, 9)] == [straight[s] for s in range(5, 9)]
  # A finished run stays finished; a larger train.steps continues it.
  train_and_evaluate(config, str(workdir))
  assert max(_losses(workdir)) == 8 and len(_losses(workdir)) == 4
  config.train.steps = 10
  train_and_evaluate(config, str(workdir))
  assert max(_losses(workdir)) == 10


def test_checkpoint_restores_state_and_next_batch(tmp_path):
  config = tiny_config(data=2, fsdp=2, tensor=2)
  tokenizer = ByteTokenizer()
  docs = load_documents("embedded", "train", val_fraction=0.02)
  mesh = make_mesh(config.mesh.shape)
  setup = make_train_setup(config, tokenizer.vocab_size, mesh)

  def data_iterator():
    return iter(make_train_dataset(docs, tokenizer, seq_len=64, batch_size=8, seed=3))

  state = init_train_state(config, setup, tokenizer.vocab_size)
  step = make_train_step(setup, config.train)
  iterator = data_iterator()
  with jax.set_mesh(mesh):
    for _ in range(3):
      batch = {k: jax.device_put(v, batch_sharding(mesh, setup.rules, v.ndim))
               for k, v in next(iterator).items()}
      state, _ = step(state, batch)
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2, async_save=True)
  meta = {"param_shapes": param_shapes(setup.abstract_state.params),
          "num_params": setup.num_params}
  checkpointer.save(3, state, iterator, meta)
  checkpointer.wait()
  expected_next = next(iterator)

  fresh_iterator = data_iterator()
  restored = Checkpointer(str(tmp_path), max_to_keep=2, async_save=True).restore(
      3, setup, fresh_iterator)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               jax.device_get(state), jax.device_get(restored))
  assert jax.tree.map(lambda a, b: a.sharding == b.sharding, state, restored)
  for key, value in next(fresh_iterator).items():
    np.testing.assert_array_equal(value, expected_next[key])
  checkpointer.close()
