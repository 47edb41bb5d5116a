"""The training loop's periodic actions (train/actions.py), each alone: the steps it is due, what
it returns, and (the mixture controller) its state restored from a checkpoint going on exactly."""
from __future__ import annotations

import types

import jax
import numpy as np
import orbax.checkpoint as ocp

from birdie_jax.evals.report import Report, TaskResult, read_report
from birdie_jax.models.forward import mean_eval_loss
from birdie_jax.train.actions import Checkpoint, Evaluation, MixtureController, ValidationLoss
from birdie_jax.train.nonfinite import NonFiniteGuard


def _due(action, total: int) -> list[int]:
  return [step for step in range(1, total + 1) if action.is_due(step)]


def _state(params) -> types.SimpleNamespace:
  """What actions read of a train state: its params."""
  return types.SimpleNamespace(params=params)


def _fake_eval_step(params, batch):
  """A loss of `params` x (1 + t / (1 + t)) per target token t, summed, and the token count."""
  targets = np.asarray(batch["targets"], np.float64)
  per_token = params * (1.0 + targets / (1.0 + targets))
  mask = np.asarray(batch["loss_mask"], np.float64)
  return {"loss_sum": np.sum(per_token * mask), "count": np.sum(mask)}


def test_validation_loss_is_due_every_eval_every_and_last_but_not_at_a_skipped_step():
  rng = np.random.default_rng(0)
  batches = [{"targets": rng.integers(0, 256, (2, 8)), "loss_mask": rng.random((2, 8)) < p}
             for p in (0.9, 0.2, 0.5)]  # unequal token counts: a mean of batch means differs
  guard = NonFiniteGuard(max_in_a_row=3)
  action = ValidationLoss(_fake_eval_step, batches, every=4, total=10, guard=guard)
  assert _due(action, 10) == [4, 8, 10]

  scalars = action.run(8, _state(1.5))
  targets = np.concatenate([b["targets"][b["loss_mask"]] for b in batches]).astype(np.float64)
  assert set(scalars) == {"val_loss"}
  np.testing.assert_allclose(scalars["val_loss"], np.mean(1.5 * (1 + targets / (1 + targets))),
                             rtol=1e-12)
  assert action.line(8, scalars) is None  # the progress line shows it

  guard.observe(True)  # the step's update was skipped: its params are the step before's
  assert not action.is_due(8) and not action.is_due(10)
  guard.observe(False)
  assert action.is_due(8)


class _Control:
  """MixtureControl's interface at a test's size: evaluations at steps 1, 2, 3, 5 and 10, and an
  update whose new mixture depends on the state (the mixture so far), as the controller's does."""

  mixture = types.SimpleNamespace(curriculum=types.SimpleNamespace(classes=("copying", "infill")))

  def __init__(self, batches):
    self.batches = batches  # per class, its validation batches
    self.state = {"updates": np.int32(0), "weights": np.full(2, 0.5, np.float32)}

  def is_eval_step(self, step):
    return step in (1, 2, 3, 5, 10)

  def abstract_state(self):
    return jax.eval_shape(lambda: self.state)

  def update(self, step, eval_step, params, data_iterator, workdir):
    losses = np.array([mean_eval_loss(eval_step, params, b) for b in self.batches])
    state = jax.device_get(self.state)  # a restored state is on the device
    weights = state["weights"] * np.exp(losses - losses.mean())
    weights = (weights / weights.sum()).astype(np.float32)
    self.state = {"updates": state["updates"] + 1, "weights": weights}
    data_iterator.append((step, weights, workdir))  # stands for set_mixture_weights
    return {"val_loss/copying": losses[0], "val_loss/infill": losses[1],
            "mixture_class/copying": weights[0], "mixture_class/infill": weights[1],
            "controller/eval_s": 0.5, "controller/update_s": 0.25,
            "controller/compile_s": 1.5 if step == 1 else 0.0}


def test_mixture_controller_follows_its_schedule_and_resumes_from_a_checkpoint(tmp_path):
  rng = np.random.default_rng(1)
  batches = [[{"targets": rng.integers(0, 256, (2, 8)), "loss_mask": np.ones((2, 8))}]
             for _ in range(2)]

  def fresh():
    return MixtureController(_Control(batches), _fake_eval_step, [], str(tmp_path))

  def params(step):  # losses that fall as training goes on
    return 3.0 / step

  straight, saved, logged = fresh(), tmp_path / "controller", {}
  assert _due(straight, 10) == [1, 2, 3, 5, 10]
  for step in _due(straight, 10):
    logged[step] = straight.run(step, _state(params(step)))
    if step == 3:  # the checkpoint a resumed run starts from
      with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(saved, straight.state)
  # Each update got the action's eval step, the state's params, data iterator and workdir.
  first = logged[1]
  targets = [b[0]["targets"].astype(np.float64) for b in batches]
  np.testing.assert_allclose([first["val_loss/copying"], first["val_loss/infill"]],
                             [np.mean(3.0 * (1 + t / (1 + t))) for t in targets], rtol=1e-12)
  assert [(s, w) for s, _, w in straight.data_iter] == [(s, str(tmp_path)) for s in logged]
  assert straight.line(1, first) == (
      f"step 1 controller: 2 classes evaluated in 0.5s, updated in 0.25s (+1.5s compiling) | "
      f"mixture: copying {first['mixture_class/copying']:.2f}, "
      f"infill {first['mixture_class/infill']:.2f}")

  resumed = fresh()
  with ocp.StandardCheckpointer() as checkpointer:
    resumed.state = checkpointer.restore(saved, resumed.abstract_state())
  assert [resumed.run(step, _state(params(step))) for step in (5, 10)] == [logged[5], logged[10]]
  np.testing.assert_array_equal(resumed.data_iter[-1][1], straight.data_iter[-1][1])


class _Evaluator:
  """Evaluator's interface: due every 3 steps; one task whose accuracy is the params' value."""

  def __init__(self):
    self.seen = []

  def is_due(self, step):
    return step % 3 == 0

  def run(self, params, *, step):
    self.seen.append((step, params))
    result = TaskResult(name="induction", metrics=("accuracy",), difficulty_label="length",
                        higher_is_better=True,
                        rows=({"difficulty": 4, "examples": 2, "chance": 0.1, "accuracy": params},),
                        overall={"accuracy": params}, seconds=0.0)
    return Report(step=step, layout="prefix", seq_len=64, examples=2,
                  tasks={"induction": result})


def test_evaluation_scores_the_params_and_writes_the_report(tmp_path):
  evaluator = _Evaluator()
  action = Evaluation(evaluator, str(tmp_path))
  assert _due(action, 10) == [3, 6, 9]
  scalars = action.run(6, _state(0.25))
  assert evaluator.seen == [(6, 0.25)]
  assert scalars == {"eval/induction/accuracy": 0.25}
  assert read_report(str(tmp_path / "eval" / "6.json")).scalars == scalars
  assert action.line(6, scalars) == "step 6 eval: induction/accuracy 0.250"


class _Recorder:
  """A checkpointer and a metrics writer that record what is asked of them, in order."""

  def __init__(self):
    self.calls = []

  def save(self, step, state, data_iter, meta, controller=None):
    self.calls.append(("save", step, state, data_iter, meta, controller))

  def flush(self):
    self.calls.append(("flush",))


def test_checkpoint_is_periodic_and_last_not_in_a_streak_and_flushes_the_rows_after_saving():
  recorder, guard = _Recorder(), NonFiniteGuard(max_in_a_row=3)
  controller = types.SimpleNamespace(state={"count": 2})
  data, meta, state = object(), {"num_params": 7}, _state(None)
  action = Checkpoint(recorder, data, meta, recorder, every=4, total=10, guard=guard,
                      controller=controller)
  assert _due(action, 10) == [4, 8, 10]
  guard.observe(True)  # in a non-finite streak: only the last step's checkpoint
  assert _due(action, 10) == [10]
  guard.observe(False)

  assert action.run(8, state) == {}
  assert recorder.calls == [("save", 8, state, data, meta, {"count": 2}), ("flush",)]
  assert Checkpoint(recorder, data, meta, recorder, every=4, total=10,
                    guard=guard).controller_state() is None
