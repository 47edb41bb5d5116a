"""NaN/Inf steps are skipped and logged, a streak rolls back, and no checkpoint holds NaN."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import TrainingError
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train import loop
from birdie_jax.train.checkpointing import Checkpointer, param_shapes
from birdie_jax.train.state import init_train_state, make_train_setup
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _config():
  """8 steps (the compiled step is shared with tests/test_training_loop.py), checkpoints every 2."""
  config = tiny_config()
  config.train.log_every = 1
  config.checkpoint.every_steps = 2
  config.train.max_nonfinite_in_a_row = 3
  return config


def _rows(workdir) -> dict[int, dict]:
  rows = {}
  for line in open(workdir / "metrics.jsonl", encoding="utf-8"):
    row = json.loads(line)
    rows.setdefault(row["step"], {}).update(row)
  return rows


def _poison(monkeypatch, bad_calls, seen):
  """Makes the train step's `call`-th batch (1-based) produce a NaN loss, and records for each
  call (state step, params and optimizer state before, the same after)."""
  make_train_step = loop.make_train_step

  def make(setup, train_config):
    step = make_train_step(setup, train_config)

    def poisoned(state, batch):
      call = len(seen) + 1
      if call in bad_calls:
        batch = {**batch, "loss_mask": batch["loss_mask"] * jnp.nan}
      before = jax.device_get((state.step, state.params, state.opt_state))
      state, metrics = step(state, batch)
      seen.append((before, jax.device_get((state.step, state.params, state.opt_state))))
      return state, metrics

    return poisoned

  monkeypatch.setattr(loop, "make_train_step", make)


def _equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_nonfinite_steps_are_skipped_then_rolled_back(tmp_path, monkeypatch, capsys):
  seen = []
  _poison(monkeypatch, {3, 5, 6, 7}, seen)
  final = loop.train_and_evaluate(_config(), str(tmp_path))
  out = capsys.readouterr().out
  # Call 3 is step 3: skipped, params and optimizer state kept, the step counter advances.
  (step, params, opt), (step_after, params_after, opt_after) = seen[2]
  assert (step, step_after) == (2, 3) and _equal(params, params_after) and _equal(opt, opt_after)
  assert not _equal(seen[3][0][1], seen[3][1][1])  # step 4 trains again
  assert "step 3/8 | non-finite loss or gradients: update skipped (1 in a row" in out
  # Calls 5-7 are steps 5-7 (no checkpoint at step 6, mid-streak): the third in a row rolls back
  # to checkpoint 4; the data goes on, so steps 5-8 run again on calls 8-11 from its state.
  assert "step 7 | rolled back to checkpoint 4" in out
  assert len(seen) == 11 and final["step"] == 8
  restored = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=3, async_save=False)
  setup = make_train_setup(_config(), ByteTokenizer().vocab_size, make_mesh({"data": -1}))
  assert seen[7][0][0] == 4
  assert _equal(seen[7][0][1], jax.device_get(restored.restore_params(4, setup)))
  restored.close()
  rows = _rows(tmp_path)
  assert rows[3]["nonfinite_skipped"] == 1.0 and rows[7]["nonfinite_in_a_row"] == 3
  # The steps run again after the rollback were logged again, finite and not skipped.
  assert all(rows[s]["nonfinite_skipped"] == 0.0 and np.isfinite(rows[s]["loss"])
             for s in range(5, 9))


def test_rollback_that_does_not_help_stops_the_run(tmp_path, monkeypatch):
  seen = []
  _poison(monkeypatch, set(range(3, 100)), seen)
  with pytest.raises(TrainingError, match=r"^3 non-finite steps in a row up to step 5, again "
                     r"after rolling back to checkpoint 2: lower train\.learning_rate"):
    loop.train_and_evaluate(_config(), str(tmp_path))
  # Steps 3-5 were skipped, so no checkpoint was written at step 4 to roll back to.
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
  assert len(seen) == 8


def test_diverging_learning_rate_is_one_clear_error(tmp_path):
  config = _config()
  config.checkpoint.every_steps = 4  # steps 1-2 train, 3-5 overflow: no checkpoint yet
  config.train.learning_rate = 1e30
  with pytest.raises(TrainingError, match=r"before the first checkpoint: lower "
                     r"train\.learning_rate") as info:
    loop.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(info.value)
  assert not list((tmp_path / "checkpoints").iterdir())


def test_checkpoint_of_nonfinite_state_is_refused(tmp_path):
  config = tiny_config()
  mesh = make_mesh(config.mesh.shape)
  setup = make_train_setup(config, 300, mesh)
  state = init_train_state(config, setup, 300)
  first = jax.tree.leaves(state.params)[0]
  params = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf) if x is first else x,
                        state.params)
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2, async_save=True)
  with pytest.raises(TrainingError, match="refusing to write checkpoint 3: .* NaN or Inf"):
    checkpointer.save(3, state.replace(params=params), iter([]),
                      {"param_shapes": param_shapes(setup.abstract_state.params)})
  checkpointer.close()
  assert not list(tmp_path.iterdir())
