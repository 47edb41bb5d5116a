"""Why a checkpoint did not restore: proven damage, a changed data layout, or anything else.

`checkpointing.Checkpointer.restore_latest` moves a checkpoint to `<step>.damaged` only on proof:
a file or item of it is missing, its bytes do not decode (JSON, UTF-8, TensorStore's DATA_LOSS /
NOT_FOUND / OUT_OF_RANGE: a truncated, deleted or corrupt array file), or its values hold NaN or
Inf; and that twice in a row, so one bad read of a flaky store proves nothing. Every other error
(an `OSError` from a store, a GCS 5xx, `MemoryError`, anything unknown) is tried again with
back-off, `checkpoint.restore_retries` times, and then stops the start with one line, renaming
nothing: the newest checkpoint is never given up for an error that says nothing about it.

The data position is not portable across layouts: with W Grain workers the batches are W
interleaved streams, worker w packing its own slice of the shuffled documents, each holding a
partly read document; process p of P reads its own slice too. No position in a stream of another W
or P equals the saved one (any mapping skips or repeats documents), so a changed
`data.num_workers` or process count stops with one line naming the knob and its old value, instead
of Grain's `KeyError: 'exhausted'` read as damage. Each checkpoint's meta records its layout;
checkpoints written before that are read from their files.
"""
from __future__ import annotations

from collections.abc import Callable
import json
import re
import time
from typing import Any, TypeVar

from etils import epath
import jax

from birdie_jax.errors import ConfigError, TrainingError

BACKOFF_S = 1.0  # the first wait before a failed read is tried again; doubles each time
_DAMAGE_CODES = ("DATA_LOSS", "NOT_FOUND", "OUT_OF_RANGE")  # TensorStore: the bytes are bad
_DATA_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
T = TypeVar("T")


class Damaged(Exception):
  """A checkpoint whose files are missing or unreadable, or whose values are not finite."""


def data_layout(iterator: Any) -> dict[str, int]:
  """{'data.num_workers', 'process_count'} of a data iterator: a Grain multiprocess iterator's
  state holds one state per worker, an in-process one does not."""
  return {"data.num_workers": _workers(iterator.get_state()), "process_count": jax.process_count()}


def _workers(state: Any) -> int:
  if isinstance(state, dict) and "iterators_in_use_states" in state:
    return len(state["iterators_in_use_states"])
  return 0


def _saved_layout(step_dir: epath.Path, meta: dict[str, Any]) -> dict[str, int] | None:
  """The layout meta records, else what the data files tell (None if they cannot say)."""
  if "data_layout" in meta:
    return meta["data_layout"]
  counts = {int(m.group(2)) for p in (step_dir / "data").glob("process_*.json")
            if (m := _DATA_FILE.fullmatch(p.name))}
  if len(counts) != 1:
    return None
  count = counts.pop()
  mine = step_dir / "data" / f"process_{min(jax.process_index(), count - 1)}-of-{count}.json"
  try:
    workers = _workers(json.loads(mine.read_text()))
  except (OSError, ValueError):
    return None  # the restore reports the unreadable file
  return {"data.num_workers": workers, "process_count": count}


def check_layout(step: int, step_dir: epath.Path, meta: dict[str, Any], iterator: Any) -> None:
  """Raises ConfigError (one line) if checkpoint `step` was written with another number of data
  workers or processes than `iterator` reads with; Damaged if this process's data file is gone."""
  saved, now = _saved_layout(step_dir, meta), data_layout(iterator)
  where = f"checkpoint {step} in {step_dir.parent}"
  if saved and saved["process_count"] != now["process_count"]:
    raise ConfigError(
        f"{where} was written by {saved['process_count']} processes and this start has "
        f"{now['process_count']}: the data position is kept per process; resume with "
        f"{saved['process_count']} processes (or use a new --workdir)")
  if saved and saved["data.num_workers"] != now["data.num_workers"]:
    raise ConfigError(
        f"{where} was written with data.num_workers={saved['data.num_workers']} and this start "
        f"has data.num_workers={now['data.num_workers']}: the data position does not carry over "
        f"to another worker count; resume with --config.data.num_workers="
        f"{saved['data.num_workers']}")
  mine = f"process_{jax.process_index()}-of-{now['process_count']}.json"
  if not (step_dir / "data" / mine).exists():
    raise Damaged(f"data/{mine} is missing")


def check_items(step_dir: epath.Path, items: tuple[str, ...]) -> None:
  """Raises Damaged if one of the item folders of the checkpoint is missing."""
  missing = [item for item in items if not (step_dir / item).is_dir()]
  if missing:
    raise Damaged(f"{', '.join(missing)} missing")


def damage_evidence(error: BaseException) -> str | None:
  """What in `error` (or the errors it came from) proves the checkpoint's files bad, or None."""
  seen = error
  while seen is not None:
    if isinstance(seen, Damaged):
      return str(seen)
    if isinstance(seen, (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError)):
      return describe(seen)
    if isinstance(seen, ValueError) and str(seen).startswith(_DAMAGE_CODES):
      return describe(seen)
    seen = seen.__cause__ or seen.__context__
  return None


def describe(error: BaseException) -> str:
  """`Type: message` on one line, at most 160 characters."""
  return " ".join(f"{type(error).__name__}: {error}".split())[:160]


def read_proven(read: Callable[[], T], *, retries: int, what: str) -> T:
  """`read()`, tried again after errors that are not proven damage (waits BACKOFF_S, 2 x ...).

  Raises:
    Damaged: the same read showed damage twice in a row.
    ConfigError: from `read` (a layout or shape the config cannot restore into).
    TrainingError: `retries` more tries failed for other reasons (one line; nothing renamed).
  """
  tries, suspected = 0, None
  while True:
    try:
      return read()
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # sorted below: damage or not
      evidence = damage_evidence(e)
      if evidence and suspected:
        raise Damaged(evidence) from e
      suspected = evidence  # damage is confirmed by a second read, at once
      if evidence:
        continue
      if tries == retries:
        raise TrainingError(
            f"cannot read {what} ({describe(e)}) after {tries + 1} tries; nothing was moved or "
            "deleted: run the same command again once the storage answers (more tries: "
            "--config.checkpoint.restore_retries)") from e
      time.sleep(BACKOFF_S * 2**tries)
      tries += 1
