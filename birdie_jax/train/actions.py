"""Periodic work inside the training loop: one small protocol, one class per job.

After each train step the loop (train/loop.py) asks every action `is_due(step)`; each one due
runs, in list order, as `run(step, state)` and returns its scalars, which join the step's one
metrics row; then `line(step, scalars)` gives its log line (None: nothing to print), printed after
the step's progress line. Work other than training restarts the throughput window once per step.
The checkpoint comes last, after the row is written (it flushes the writer), and is also run when
a signal asks the run to stop.

    ValidationLoss     mean loss on the fixed validation batches (train.eval_every, the last step)
    MixtureController  Birdie's controller: a new mixture for the data (its schedule's steps)
    Evaluation         the retrieval evaluations of evals/ (eval.every); reports under eval/
    Checkpoint         state, data position, meta and controller state (checkpoint.every_steps,
                       the last step); never during a non-finite streak

A new periodic job (a sample dump, a probe) is one new class with `is_due`, `run` and `line`,
added to the list in `loop._build_run`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import os
from typing import Any, Protocol

import jax

from birdie_jax.models.forward import mean_eval_loss
from birdie_jax.train.mixture_control import MixtureControl
from birdie_jax.train.nonfinite import NonFiniteGuard

Scalars = dict[str, float]


class Action(Protocol):
  """A periodic job of the training loop."""

  def is_due(self, step: int) -> bool:
    """Whether the job runs after train step `step`."""

  def run(self, step: int, state: Any) -> Scalars:
    """Does the job on the train state after `step`; the scalars to log at `step`."""

  def line(self, step: int, scalars: Mapping[str, float]) -> str | None:
    """The log line of `run`'s `scalars`, or None."""


class ValidationLoss:
  """The mean loss per target token on the run's fixed validation batches.

  Due every `every` steps and at the last step, but not at a step whose update was skipped as
  non-finite (its params are those of the step before). The progress line shows the value.
  """

  def __init__(self, eval_step: Callable, batches: Sequence[Mapping[str, Any]], *, every: int,
               total: int, guard: NonFiniteGuard):
    self.eval_step, self.batches = eval_step, batches
    self.every, self.total, self.guard = every, total, guard

  def is_due(self, step: int) -> bool:
    """`train.eval_every` steps and the last one, outside a non-finite streak."""
    return not self.guard.in_a_row and (step % self.every == 0 or step == self.total)

  def run(self, step: int, state: Any) -> Scalars:
    """{'val_loss': the mean loss of `state.params`}."""
    del step
    return {"val_loss": mean_eval_loss(self.eval_step, state.params, self.batches)}

  def line(self, step: int, scalars: Mapping[str, float]) -> str | None:
    """None: `val_loss` goes into the step's progress line."""
    del step, scalars


class MixtureController:
  """Birdie's controller (train/mixture_control.py) at its schedule's evaluation steps.

  Each run evaluates every configuration, updates the controller and hands the new mixture to the
  data iterator (the next batch is drawn from it). `state` is the controller's state, which each
  checkpoint holds; a restored one continues the schedule (reward history, mixture).
  """

  def __init__(self, control: MixtureControl, eval_step: Callable, data_iter, workdir: str):
    self.control, self.eval_step = control, eval_step
    self.data_iter, self.workdir = data_iter, workdir

  @property
  def state(self) -> Any:
    """The controller state (a pytree), what a checkpoint saves."""
    return self.control.state

  @state.setter
  def state(self, value: Any) -> None:
    self.control.state = value

  def abstract_state(self) -> Any:
    """Shapes and dtypes of `state`, the target a checkpoint restores into."""
    return self.control.abstract_state()

  def is_due(self, step: int) -> bool:
    """The controller schedule's evaluation steps."""
    return self.control.is_eval_step(step)

  def run(self, step: int, state: Any) -> Scalars:
    """Losses, rewards, the new mixture and the controller's timings."""
    return self.control.update(step, self.eval_step, state.params, self.data_iter, self.workdir)

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    """'step 5 controller: 7 classes evaluated in ... | mixture: copying 0.14, ...'."""
    classes = self.control.mixture.curriculum.classes
    weights = ", ".join(f"{c} {scalars[f'mixture_class/{c}']:.2f}" for c in classes)
    reward = f" | reward {scalars['reward/total']:+.3f}" if "reward/total" in scalars else ""
    compiled = scalars["controller/compile_s"]
    compiled = f" (+{compiled:.1f}s compiling)" if compiled else ""
    return (f"step {step} controller: {len(classes)} classes evaluated in "
            f"{scalars['controller/eval_s']:.1f}s, updated in "
            f"{scalars['controller/update_s']:.2f}s{compiled}{reward} | mixture: {weights}")


class Evaluation:
  """The evaluation tasks (`evals.runner.Evaluator`) every `eval.every` steps.

  Process 0 writes the report as `eval/<step>.{json,md}` and a plot per task; every process
  computes the same scalars (`eval/<task>/<metric>`).
  """

  def __init__(self, evaluator, workdir: str):
    self.evaluator, self.workdir = evaluator, workdir

  def is_due(self, step: int) -> bool:
    """The evaluator's `eval.every` steps."""
    return self.evaluator.is_due(step)

  def run(self, step: int, state: Any) -> Scalars:
    """Scores `state.params` on every task; the report's scalars."""
    report = self.evaluator.run(state.params, step=step)
    if jax.process_index() == 0:
      report.write(os.path.join(self.workdir, "eval"))
    return dict(report.scalars)

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    """'step 100 eval: induction/accuracy 0.500, ...'."""
    return f"step {step} eval: " + ", ".join(
        f"{k.removeprefix('eval/')} {v:.3f}" for k, v in sorted(scalars.items()))


class Checkpoint:
  """A checkpoint every `every` steps and at the last step, then the metrics rows flushed (a
  remote workdir's rows up to a checkpoint are never lost).

  No periodic checkpoint during a non-finite streak: the rollback needs one from before it. The
  controller's state, when the run has one, is saved with the train state and data position.
  """

  def __init__(self, checkpointer, data_iter, meta: dict[str, Any], writer, *, every: int,
               total: int, guard: NonFiniteGuard, controller: MixtureController | None = None):
    self.checkpointer, self.data_iter, self.meta = checkpointer, data_iter, meta
    self.writer = writer
    self.every, self.total, self.guard, self.controller = every, total, guard, controller

  def controller_state(self) -> Any:
    """The controller state to save with the train state, or None."""
    return None if self.controller is None else self.controller.state

  def is_due(self, step: int) -> bool:
    """`checkpoint.every_steps` steps outside a non-finite streak, and the last step."""
    return (step % self.every == 0 and not self.guard.in_a_row) or step == self.total

  def run(self, step: int, state: Any) -> Scalars:
    """Starts writing checkpoint `step` (in the background when async); no scalars."""
    self.checkpointer.save(step, state, self.data_iter, self.meta,
                           controller=self.controller_state())
    self.writer.flush()
    return {}

  def line(self, step: int, scalars: Mapping[str, float]) -> str | None:
    """None: a checkpoint is not announced."""
    del step, scalars
