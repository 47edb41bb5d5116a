"""Where one task's learning-rate sweep keeps its progress, so a killed sweep resumes where it
stopped instead of starting over.

    progress = SweepProgress(os.path.join(progress_dir(workdir), "phonebook"), identity)
    record = progress.finished(i)            # LR i's JSON record, or None
    meta = progress.running_meta(i)          # LR i's curve so far, or None (not started)
    step, state = progress.restore_running(i, setup)
    progress.save_running(i, step, state, meta)   # at every learning-curve point
    progress.finish(i, record, params)       # LR i done: its params, then its record
    progress.keep_partial(i, stop, record)   # LR i reached a pruning step (its state is kept)
    progress.partial(i, stop)                # that record, or None

Layout of the folder (`finetune_protocol.finetune_task` writes it when given a folder):
    sweep.json        what the sweep is (task, settings, pre-trained step): a folder written by
                      another sweep stops the start in one line instead of mixing two sweeps
    params/<i>/       Orbax: LR i's fine-tuned params (the chosen LR's are scored at the end,
                      perhaps by a later process than the one that trained them)
    lr<i>.json        LR i's record; written after its params are committed, so a record
                      always has its params (a pruned LR's record has none)
    lr<i>-at<s>.json  LR i's record at pruning step s (`FinetuneSettings.prune_at`), written
                      after its state there: what ranks it, and its record if it is pruned
    running-<i>/<s>/  Orbax: LR i's train state after step s and its curve so far (`meta`), kept
                      at the newest learning-curve point only; removed when LR i finishes
Why. On a lent GPU one call runs at most 10 minutes and a task's three fine-tunes of a 50m model
took 11 (2026-12-07, H200: 218 s per 1,000 steps); the sweep used to write only at its end, so
every kill lost all of it. Orbax writes each checkpoint into a temporary folder and renames it
when complete, and JSON files are replaced atomically: a kill at any instant leaves the last
complete point. Resuming regenerates the data stream and skips the batches already trained on
(examples are a pure function of seed and index), so a resumed sweep trains on the same batches
as an uninterrupted one. `MemoryProgress` is the same without a folder (nothing survives the
process): the protocol goes through one or the other.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from birdie_jax.errors import ConfigError
from birdie_jax.train.checkpointing import restore_targets
from birdie_jax.train.state import TrainSetup, TrainState
from birdie_jax.workdir import FINETUNE_DIR, as_path, is_remote, write_atomic


def progress_dir(workdir: str) -> str:
  """Where a run's fine-tuning CLIs keep their sweeps' progress, one folder per task:
  `<workdir>/finetune/checkpoints` (beside their results; GPU calls pack no `checkpoints`)."""
  return os.path.join(workdir, FINETUNE_DIR, "checkpoints")


def _manager(directory: str, keep: int | None) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=False, create=True))


class SweepProgress:
  """One task's sweep on disk (the module docstring has the layout)."""

  keeps_every_point = True  # the running state at every curve point: a kill loses at most one

  def __init__(self, directory: str, identity: dict[str, Any]):
    """Opens `directory` for the sweep `identity` (JSON-ready: task, settings, pre-trained
    step), recording it on first use.

    Raises:
      ConfigError: the folder holds another sweep's progress.
    """
    self._directory = directory if is_remote(directory) else os.path.abspath(directory)
    path = as_path(self._directory) / "sweep.json"
    wanted = json.loads(json.dumps(identity))  # tuples as lists, as read back
    if path.exists():
      found = json.loads(path.read_text(encoding="utf-8"))
      if found != wanted:
        changed = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
        raise ConfigError(
            f"{self._directory} holds another fine-tuning sweep's progress (its {changed[0]} "
            f"differs); remove the folder to start this sweep over")
    elif jax.process_index() == 0:
      write_atomic(path, json.dumps(wanted, indent=2))
    self._params = _manager(os.path.join(self._directory, "params"), keep=None)
    self._managers: dict[int, ocp.CheckpointManager] = {}  # running-<i>, opened when used

  def finished(self, index: int) -> dict[str, Any] | None:
    """LR `index`'s record when it has finished, else None."""
    path = as_path(self._directory) / f"lr{index}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

  def finish(self, index: int, record: dict[str, Any], params=None) -> None:
    """Keeps LR `index`'s params (None: a pruned LR, no params), then its record, then drops its
    running state."""
    if params is not None:
      self._params.save(index, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                        force=True)
      self._params.wait_until_finished()
    running = self._managers.pop(index, None)
    if running is not None:
      running.close()
    if jax.process_index() == 0:
      write_atomic(os.path.join(self._directory, f"lr{index}.json"), json.dumps(record))
      folder = as_path(self._running_dir(index))
      if folder.exists():
        folder.rmtree()
    self._sync(f"finish_{index}")

  def partial(self, index: int, stop: int) -> dict[str, Any] | None:
    """LR `index`'s record at pruning step `stop`, or None."""
    path = as_path(self._directory) / f"lr{index}-at{stop}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

  def keep_partial(self, index: int, stop: int, record: dict[str, Any]) -> None:
    """Keeps LR `index`'s record at pruning step `stop` (its state there is already saved)."""
    if jax.process_index() == 0:
      write_atomic(os.path.join(self._directory, f"lr{index}-at{stop}.json"), json.dumps(record))
    self._sync(f"partial_{index}_{stop}")

  def release_params(self, indices) -> None:
    """Nothing: params on disk cost no memory (`MemoryProgress` drops them)."""

  def params(self, index: int, like) -> Any:
    """LR `index`'s fine-tuned params, restored into the shapes and shardings of `like` (a
    params tree of the same model)."""
    target = restore_targets(like, jax.tree.map(lambda a: a.sharding, like))
    restored = self._params.restore(index, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))
    return restored["params"]

  def running_meta(self, index: int) -> dict[str, Any] | None:
    """What LR `index` recorded at its newest saved point (step, curve, losses, seconds), or
    None when it has none."""
    manager = self._running(index)
    step = manager.latest_step()
    if step is None:
      return None
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_running(self, index: int, setup: TrainSetup) -> tuple[int, TrainState] | None:
    """LR `index`'s newest saved (step, train state) in `setup`'s shardings, or None."""
    manager = self._running(index)
    step = manager.latest_step()
    if step is None:
      return None
    target = restore_targets(setup.abstract_state, setup.state_shardings)
    state = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
    return step, state

  def save_running(self, index: int, step: int, state: TrainState,
                   meta: dict[str, Any]) -> None:
    """Keeps LR `index`'s state after `step` with `meta` (the newest point only)."""
    self._running(index).save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def _running_dir(self, index: int) -> str:
    return os.path.join(self._directory, f"running-{index}")

  def _running(self, index: int) -> ocp.CheckpointManager:
    if index not in self._managers:
      self._managers[index] = _manager(self._running_dir(index), keep=1)
    return self._managers[index]

  @staticmethod
  def _sync(name: str) -> None:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"birdie_jax_finetune_progress_{name}")


class MemoryProgress:
  """`SweepProgress`'s interface in memory, for a sweep without a folder: states are copied
  (the train step donates its input), records and params kept as given."""

  keeps_every_point = False  # only at pruning steps: a copy of a 1.4B model's state is 22 GB

  def __init__(self):
    self._finished: dict[int, dict[str, Any]] = {}
    self._params: dict[int, Any] = {}
    self._partial: dict[tuple[int, int], dict[str, Any]] = {}
    self._running: dict[int, tuple[int, TrainState, dict[str, Any]]] = {}

  def finished(self, index: int) -> dict[str, Any] | None:
    return self._finished.get(index)

  def finish(self, index: int, record: dict[str, Any], params=None) -> None:
    if params is not None:
      self._params[index] = params
    self._finished[index] = record
    self._running.pop(index, None)

  def partial(self, index: int, stop: int) -> dict[str, Any] | None:
    return self._partial.get((index, stop))

  def keep_partial(self, index: int, stop: int, record: dict[str, Any]) -> None:
    self._partial[(index, stop)] = record

  def release_params(self, indices) -> None:
    """Drops the params of LRs `indices` (they will not be chosen)."""
    for index in indices:
      self._params.pop(index, None)

  def params(self, index: int, like) -> Any:
    del like  # kept as trained
    return self._params[index]

  def running_meta(self, index: int) -> dict[str, Any] | None:
    kept = self._running.get(index)
    return None if kept is None else kept[2]

  def restore_running(self, index: int, setup: TrainSetup) -> tuple[int, TrainState] | None:
    del setup  # kept in its shardings
    kept = self._running.get(index)
    return None if kept is None else (kept[0], jax.tree.map(jnp.copy, kept[1]))

  def save_running(self, index: int, step: int, state: TrainState,
                   meta: dict[str, Any]) -> None:
    self._running[index] = (step, jax.tree.map(jnp.copy, state), json.loads(json.dumps(meta)))
