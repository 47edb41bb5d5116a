"""SIGTERM (what TPU VMs and schedulers send before preempting) turned into a request to stop.

The training loop asks `reached(step)` after every step: it then writes a checkpoint and returns,
so the same command resumes where the run stopped. In a multi-process run (`jax.distributed`), JAX's
preemption service receives SIGTERM instead and agrees on one step for every process, so all of
them write the same checkpoint together (one process stopping alone would leave the others
waiting in a collective).
"""
from __future__ import annotations

import signal
import threading
import types

import jax
from jax.experimental import multihost_utils


class PreemptionSignal:
  """While active, SIGTERM sets `requested` instead of killing the process.

  Signal handlers can only be installed from the main thread; elsewhere (e.g. a notebook's worker
  thread) this is inactive and SIGTERM keeps its default behaviour. Under `jax.distributed` no
  handler is installed: JAX's preemption service owns SIGTERM and `reached` asks it.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step` (the same answer on every process)."""
    if jax.distributed.is_initialized():
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self) -> PreemptionSignal:
    if (threading.current_thread() is threading.main_thread()
        and not jax.distributed.is_initialized()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
