"""One writer per workdir: `lock.json` in the workdir names the job that trains in it.

A second `main` on a workdir that a live job holds (a scheduler's requeue while the old job still
runs) stops in one line naming the holder, before it reads a checkpoint or writes a file, so no
step is trained twice and metrics.jsonl is never written by two processes:

    with hold_workdir(workdir, stale_s=config.checkpoint.lock_stale_s):
      ...  # train

The file holds host, pid, start time, a heartbeat time and a random token. The holder rewrites the
heartbeat every `stale_s / 10` seconds from a daemon thread (not from the training loop, which a
compile or a checkpoint wait can block for minutes) and removes the file on every exit that runs
`finally` (a finished run, an error, SIGTERM or SIGINT). A SIGKILL or a lost host leaves it
behind; it is stale, and taken over with one warning, when its pid is dead on this host or its
heartbeat is older than `checkpoint.lock_stale_s` (the only test for another host's job; a job
frozen that long, e.g. by SIGSTOP, counts as gone too, and its heartbeat thread then warns that
it lost the lock).

Multi-process runs: process 0 holds the lock for the job and tells the others whether it got it;
they never touch the file.

Creation: local folders use `os.link` of a complete temporary file (atomic create-if-absent, also
on NFS, and no reader ever sees a half-written lock). Object stores (gs://...) through etils.epath
have no create-if-absent (GCS's ifGenerationMatch=0 is not exposed), so the lock is taken by
check, write, pause `_SETTLE_S`, read back: of two starts that both saw no lock, the earlier writer
reads the later one's token and refuses. Both go on only if one's write lands after the other's
read-back, i.e. their check-write steps are more than `_SETTLE_S` apart yet both checks saw no
lock, which needs a listing lag longer than that (GCS reads are strongly consistent). Taking over
a stale lock has the same window locally: two new starts racing for one stale lock can both win.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from birdie_jax.console import log_warning
from birdie_jax.errors import ConfigError
from birdie_jax.workdir import as_path, is_remote, write_atomic

LOCK_FILE = "lock.json"
_SETTLE_S = 2.0  # object stores: pause between writing the lock and reading it back


def _read(path: epath.Path) -> dict | None:
  """The lock's fields; None if there is no lock; {} if it cannot be parsed."""
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}
  return record if isinstance(record, dict) else {}


def _pid_alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def stale_reason(record: dict, stale_s: float, now: float | None = None) -> str | None:
  """Why the lock `record` no longer holds the workdir, or None if its job looks alive."""
  age = (time.time() if now is None else now) - float(record.get("heartbeat", 0.0))
  if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", 0))):
    return f"pid {record.get('pid')} is not running on this host"
  if age > stale_s:
    return f"its heartbeat is {age:.0f}s old (checkpoint.lock_stale_s={stale_s:g})"
  return None


def _describe(record: dict) -> str:
  started = datetime.datetime.fromtimestamp(float(record.get("started", 0.0)),
                                            datetime.timezone.utc)
  age = time.time() - float(record.get("heartbeat", 0.0))
  return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} (started "
          f"{started:%Y-%m-%d %H:%M:%S} UTC, heartbeat {age:.0f}s ago)")


class WorkdirLock:
  """The lock file of one workdir, held by this process between `acquire` and `release`."""

  def __init__(self, workdir: str, stale_s: float):
    self.workdir = os.fspath(workdir)
    self.path = as_path(workdir) / LOCK_FILE
    self.stale_s = stale_s
    self._record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                    "heartbeat": time.time(), "token": uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def acquire(self) -> None:
    """Takes the lock (a stale one with a warning) and starts the heartbeat.

    Raises:
      ConfigError: a live job holds the workdir, or the workdir cannot be written.
    """
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      held = self._create()
      if held is not None:
        reason = stale_reason(held, self.stale_s) if held else "the lock file is unreadable"
        if reason is None:
          raise ConfigError(f"workdir {self.workdir} is in use by {_describe(held)}; stop that "
                            f"job first, or use another --workdir")
        log_warning(f"taking over the lock of workdir {self.workdir} from {_describe(held)}: "
                    f"{reason}")
        self._take_over(held)
    except OSError as e:
      raise ConfigError(f"cannot lock workdir {self.workdir} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())})") from e
    self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
    self._thread.start()

  def _payload(self) -> bytes:
    return json.dumps(self._record).encode("utf-8")

  def _create(self) -> dict | None:
    """Creates the lock if absent: None when created, else the present lock's fields."""
    if is_remote(self.path):
      held = _read(self.path)
      if held is not None:
        return held
      self.path.write_bytes(self._payload())
      time.sleep(_SETTLE_S)
      held = _read(self.path)
      return None if held and held.get("token") == self._record["token"] else held or {}
    temporary = self.path.parent / f".{LOCK_FILE}.{self._record['token']}.tmp"
    temporary.write_bytes(self._payload())
    try:
      os.link(temporary, self.path)
      return None
    except FileExistsError:
      return _read(self.path) or {}
    finally:
      os.unlink(temporary)

  def _take_over(self, stale: dict) -> None:
    """Replaces the stale lock `stale`; ConfigError if another start took it meanwhile."""
    if is_remote(self.path):
      self.path.unlink(missing_ok=True)
    else:
      moved = self.path.parent / f".{LOCK_FILE}.{self._record['token']}.stale"
      os.rename(self.path, moved)  # only one racer moves the stale file
      moved_record = _read(moved) or {}
      os.unlink(moved)
      if moved_record.get("token") != stale.get("token"):
        raise ConfigError(f"workdir {self.workdir}: another start took over its stale lock "
                          "at the same time; stop one of them")
    held = self._create()
    if held is not None:
      raise ConfigError(f"workdir {self.workdir} is in use by {_describe(held)}, which took over "
                        "its stale lock at the same time")

  def _beat(self) -> None:
    """Refreshes the heartbeat until released; warns once and stops if the lock was taken."""
    while not self._stop.wait(max(self.stale_s / 10, 0.5)):
      held = _read(self.path)
      if not held or held.get("token") != self._record["token"]:
        holder = _describe(held) if held else "nobody"
        log_warning(f"lost the lock of workdir {self.workdir} (now held by {holder}); another "
                    "job may be writing there")
        return
      self._record["heartbeat"] = time.time()
      with contextlib.suppress(OSError):
        write_atomic(self.path, self._payload())

  def release(self) -> None:
    """Stops the heartbeat and removes the lock if it is still this job's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    held = _read(self.path)
    if held and held.get("token") == self._record["token"]:
      with contextlib.suppress(OSError):
        self.path.unlink()


@contextlib.contextmanager
def hold_workdir(workdir: str, stale_s: float) -> Iterator[None]:
  """Holds `workdir`'s lock for the job (process 0 takes it; every process learns the outcome).

  Raises:
    ConfigError: another live job holds the workdir (on every process).
  """
  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir, stale_s)
    try:
      lock.acquire()
    except ConfigError as e:
      lock, error = None, e
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      error = ConfigError(f"process 0 could not lock workdir {workdir} (its error says why)")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
