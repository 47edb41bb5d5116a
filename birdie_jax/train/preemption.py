"""SIGTERM (what TPU VMs and schedulers send before preempting) turned into a request to stop.

The training loop checks `requested` after every step: it then writes a checkpoint and returns,
so the same command resumes where the run stopped.
"""
from __future__ import annotations

import signal
import threading
import types


class PreemptionSignal:
  """While active, SIGTERM sets `requested` instead of killing the process.

  Signal handlers can only be installed from the main thread; elsewhere (e.g. a notebook's worker
  thread) this is inactive and SIGTERM keeps its default behaviour.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del signum, frame
    self.requested = True

  def __enter__(self) -> PreemptionSignal:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
