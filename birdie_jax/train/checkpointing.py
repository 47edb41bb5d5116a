"""Orbax checkpoints of the train state, the data-pipeline position and run metadata.

Each checkpoint is `checkpoints/<step>/{state, data, meta}`; Orbax writes into a temporary folder
and renames it when complete, so a checkpoint is either whole or absent.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from birdie_jax.errors import ConfigError
from birdie_jax.train.state import TrainSetup, TrainState


def param_shapes(params) -> dict[str, list[int]]:
  """'path/to/leaf' -> shape, the model-shape signature stored in each checkpoint."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
          for path, leaf in flat}


class Checkpointer:
  """Saves and restores {state, data iterator, meta} under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int, async_save: bool):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: TrainState, data_iterator: grain.DatasetIterator,
           meta: dict[str, Any], controller: Any = None) -> None:
    """Starts writing a checkpoint (in the background when async); `controller` is the mixture
    controller's state pytree, for the curricula that have one."""
    items = {"state": ocp.args.StandardSave(state),
             "data": grain.checkpoint.CheckpointSave(data_iterator),
             "meta": ocp.args.JsonSave(meta)}
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
    """Restores the state into its shardings and moves `data_iterator` to the saved position."""
    meta = self.read_meta(step)
    expected = param_shapes(setup.abstract_state.params)
    if meta.get("param_shapes") != expected:
      raise ConfigError(
          f"the workdir's checkpoint {step} belongs to a model of a different shape "
          f"({meta.get('num_params')} params vs {setup.num_params} now); use a new --workdir")
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          setup.abstract_state, setup.state_shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["state"]

  def restore_params(self, step: int, setup: TrainSetup) -> Any:
    """Restores only the params of checkpoint `step` into their shardings (for inference)."""
    meta = self.read_meta(step)
    if meta.get("param_shapes") != param_shapes(setup.abstract_state.params):
      raise ConfigError(f"checkpoint {step} belongs to a model of a different shape "
                        f"({meta.get('num_params')} params vs {setup.num_params} in the config)")
    target = {"params": jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        setup.abstract_state.params, setup.state_shardings.params)}
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
