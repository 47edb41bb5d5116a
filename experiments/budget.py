"""A time budget for one invocation of a long experiment, enforced through the preemption path.

Once the budget is spent, the process sends itself SIGTERM every second until the budget is left:
inside `train_and_evaluate`, SIGTERM makes the training loop finish its step, write a checkpoint and
return (its preemption handling); elsewhere this budget's own handler only records it. The script
checks `spent` before starting new work, so an invocation ends soon after its budget and the next
one resumes from the checkpoint.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import types

_RESEND_S = 1.0  # a SIGTERM that arrived before the training loop listened is sent again


class Budget:
  """While entered (from the main thread), `seconds` of work; then SIGTERM until exit."""

  def __init__(self, seconds: float):
    self.seconds = seconds
    self._start = 0.0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._previous = None
    self._signalled = False

  @property
  def left(self) -> float:
    """Seconds left (negative once spent)."""
    return self.seconds - (time.perf_counter() - self._start)

  @property
  def spent(self) -> bool:
    """Whether the budget is used up."""
    return self._signalled or self.left <= 0

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del signum, frame
    self._signalled = True

  def _signal_when_spent(self) -> None:
    if self._stop.wait(max(self.left, 0.0)):
      return
    while not self._stop.is_set():
      os.kill(os.getpid(), signal.SIGTERM)
      self._stop.wait(_RESEND_S)

  def __enter__(self) -> Budget:
    self._start = time.perf_counter()
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    self._thread = threading.Thread(target=self._signal_when_spent, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()  # no SIGTERM after this, so the previous handler can come back
    signal.signal(signal.SIGTERM, self._previous)
