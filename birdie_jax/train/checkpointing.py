"""Orbax checkpoints of the train state, the data-pipeline position and run metadata.

Each checkpoint is `checkpoints/<step>/{state, data, meta[, controller]}`. Orbax writes it into
`<step>.orbax-checkpoint-tmp`, adds `commit_success.txt` and renames the folder to `<step>` when
complete; a run killed mid-write leaves only the tmp folder, which step listings ignore and the
next save of that step replaces. A checkpoint proven damaged (files missing, truncated or not
decoding, non-finite values: `restore_faults`) is moved to `<step>.damaged` and the next older one
is used, with one warning line; any other error while restoring is tried again with back-off and
then stops the start in one line, renaming nothing. A changed `data.num_workers` or process count
stops in one line naming it (the meta records the data layout). No checkpoint is written from a
state holding NaN or Inf.

The objective mixture is saved once. With a controller it lives in `controller` (its `action`):
`data` then holds the pipeline's position and the mixture's fingerprint, not its weights, and a
restore sets the pipeline's weights from the controller state (`mixture_control.data_weights`).
Checkpoints written before, whose `data` also holds the weights, restore the same way. Without a
controller the mixture never changes and `data` keeps its weights.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import sys
from typing import Any

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from birdie_jax.console import log_warning
from birdie_jax.data.pipeline import set_mixture_weights
from birdie_jax.data.pipeline import without_mixture_weights
from birdie_jax.errors import ConfigError, TrainingError
from birdie_jax.models.placed import PlacedModel
from birdie_jax.train import restore_faults
from birdie_jax.train.mixture_control import data_weights
from birdie_jax.train.nonfinite import is_finite
from birdie_jax.train.state import TrainSetup, TrainState


def restore_targets(tree, shardings) -> Any:
  """Abstract arrays of `tree`'s shapes and dtypes placed as `shardings`: what Orbax restores
  into."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree,
                      shardings)


def param_shapes(params) -> dict[str, list[int]]:
  """'path/to/leaf' -> shape, the model-shape signature stored in each checkpoint."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
          for path, leaf in flat}


class Checkpointer:
  """Saves and restores {state, data iterator, meta} under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int, async_save: bool,
               restore_retries: int = 2):
    self._directory = os.path.abspath(directory)
    self._restore_retries = restore_retries  # more tries of a read that failed, not from damage
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: TrainState, data_iterator: grain.DatasetIterator,
           meta: dict[str, Any], controller: Any = None) -> None:
    """Starts writing a checkpoint (in the background when async); `controller` is the mixture
    controller's state pytree, for the curricula that have one. The mixture is saved once: with a
    controller, in its state only (the data item then holds the position without the weights).

    Raises:
      TrainingError: `state` holds a NaN or Inf (nothing is written).
    """
    if not is_finite(state):
      raise TrainingError(f"refusing to write checkpoint {step}: the train state holds NaN or Inf")
    items = {"state": ocp.args.StandardSave(state),
             "data": grain.checkpoint.CheckpointSave(
                 data_iterator if controller is None else without_mixture_weights(data_iterator)),
             "meta": ocp.args.JsonSave(
                 {**meta, "data_layout": restore_faults.data_layout(data_iterator)})}
    if controller is not None:
      items["controller"] = ocp.args.StandardSave(controller)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore_controller(self, step: int, target: Any) -> Any:
    """The controller state saved with checkpoint `step`, restored into `target`'s shapes."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        controller=ocp.args.StandardRestore(target)))
    return restored["controller"]

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of checkpoint `step`."""
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, setup: TrainSetup,
              data_iterator: grain.DatasetIterator) -> TrainState:
    """Restores the state into its shardings and moves `data_iterator` to the saved position.

    Raises:
      ConfigError: the checkpoint belongs to a model of another shape, or was written with
        another data.num_workers or process count.
      restore_faults.Damaged: an item or data file is missing, or the state holds NaN or Inf
        (Orbax raises its own errors for unreadable files).
    """
    step_dir = epath.Path(self._directory) / str(step)
    restore_faults.check_items(step_dir, ("state", "data", "meta"))
    meta = self.read_meta(step)
    restore_faults.check_layout(step, step_dir, meta, data_iterator)
    expected = param_shapes(setup.abstract_state.params)
    if meta.get("param_shapes") != expected:
      raise ConfigError(
          f"the workdir's checkpoint {step} belongs to a model of a different shape "
          f"({meta.get('num_params')} params vs {setup.num_params} now); use a new --workdir")
    target = restore_targets(setup.abstract_state, setup.state_shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    if not is_finite(restored["state"]):
      raise restore_faults.Damaged("the state holds NaN or Inf")
    return restored["state"]

  def restore_latest(self, setup: TrainSetup, data_iterator: grain.DatasetIterator,
                     controller_target: Any = None) -> tuple[int, TrainState, Any] | None:
    """The newest checkpoint that restores whole: (step, state, controller state or None).

    Checkpoints proven damaged on the way are moved to `<step>.damaged`, with one warning line;
    other read errors are tried again (`restore_faults.read_proven`).

    Returns:
      None when the directory holds no checkpoint.

    Raises:
      ConfigError: checkpoints exist but none can be restored, or they belong to a model of
        another shape or data layout.
      TrainingError: a checkpoint could not be read for a reason other than damage.
    """
    damaged, reasons = [], []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, controller = restore_faults.read_proven(
            lambda step=step: self._restore_whole(step, setup, data_iterator, controller_target),
            retries=self._restore_retries, what=f"checkpoint {step} in {self._directory}")
      except restore_faults.Damaged as e:
        damaged.append(step)
        reasons.append(str(e))
        continue
      if damaged:
        self._set_aside(damaged)
        log_warning(f"{_steps(damaged)} in {self._directory} cannot be restored ({reasons[0]}); "
                    f"moved to <step>.damaged, resuming from checkpoint {step}")
      return step, state, controller
    if damaged:
      raise ConfigError(f"no checkpoint in {self._directory} can be restored ({_steps(damaged)}; "
                        f"newest: {reasons[0]}); move them away or use a new --workdir")
    return None

  def _restore_whole(self, step: int, setup: TrainSetup, data_iterator: grain.DatasetIterator,
                     controller_target: Any) -> tuple[TrainState, Any]:
    """One try at the state, data position and controller state of checkpoint `step`."""
    with _quiet_aborted_reads():
      state = self.restore(step, setup, data_iterator)
      if controller_target is None:
        return state, None
      restore_faults.check_items(epath.Path(self._directory) / str(step), ("controller",))
      controller = self.restore_controller(step, controller_target)
      # The mixture's one copy is the controller's; checkpoints written before it was (whose data
      # item still holds the weights) get the same weights set again.
      weights = data_weights(controller)
      if weights is not None:
        set_mixture_weights(data_iterator, weights)
      return state, controller

  def restore_state(self, step: int, setup: TrainSetup) -> TrainState:
    """Only the train state of checkpoint `step` (a rollback keeps the data position)."""
    target = restore_targets(setup.abstract_state, setup.state_shardings)
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]

  def _set_aside(self, steps: list[int]) -> None:
    """Renames the folders of `steps` to `<step>.damaged` (process 0) and forgets them."""
    if jax.process_index() == 0:
      for step in steps:
        folder = epath.Path(self._directory) / str(step)
        target, n = folder.with_name(f"{step}.damaged"), 1
        while target.exists():
          target, n = folder.with_name(f"{step}.damaged-{n}"), n + 1
        folder.rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("birdie_jax_checkpoints_set_aside")
    self._manager.reload()

  def restore_params(self, step: int, placed: PlacedModel) -> Any:
    """Restores only the params of checkpoint `step` into their shardings (for inference)."""
    meta = self.read_meta(step)
    if meta.get("param_shapes") != param_shapes(placed.abstract_params):
      raise ConfigError(f"checkpoint {step} belongs to a model of a different shape "
                        f"({meta.get('num_params')} params vs {placed.num_params} in the config)")
    target = {"params": restore_targets(placed.abstract_params, placed.param_shardings)}
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    return restored["state"]["params"]

  def wait(self) -> None:
    """Blocks until background writes are finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending writes and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


@contextlib.contextmanager
def _quiet_aborted_reads() -> Iterator[None]:
  """Silences the 'Event loop is closed' errors that the array reads still in flight report (via
  `sys.unraisablehook`, one traceback each) once Orbax has given up on a damaged checkpoint."""
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    sys.unraisablehook = previous


def _steps(steps: list[int]) -> str:
  return ("checkpoint " if len(steps) == 1 else "checkpoints ") + ", ".join(map(str, steps))
