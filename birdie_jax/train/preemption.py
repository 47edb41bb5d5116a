"""Stops that can save: SIGTERM and SIGINT turned into a request to stop, and errors in the loop.

SIGTERM (what TPU VMs and schedulers send before preempting) and SIGINT (Ctrl-C) behave alike:
the training loop asks `reached(step)` after every step, then writes a checkpoint and returns, so
the same command resumes where the run stopped; a second Ctrl-C aborts at once (no checkpoint).
In a multi-process run (`jax.distributed`), JAX's preemption service receives SIGTERM instead and
agrees on one step for every process, so all of them write the same checkpoint together (one
process stopping alone would leave the others waiting in a collective); SIGINT keeps its default
there, so send SIGTERM to stop such a run.

An exception inside the loop (a data read error, a failed write) goes through `stopped_by_error`:
it writes a checkpoint of the last state that is known good, whose data position matches, and
returns the one-line TrainingError to raise. No such checkpoint is written during a non-finite
streak (see train/nonfinite.py), from a state the failing step already donated, or in a
multi-process run (the other processes are not there to write their shards).
"""
from __future__ import annotations

import signal
import threading
import types
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils

from birdie_jax.cli import one_line
from birdie_jax.errors import ConfigError, TrainingError


class PreemptionSignal:
  """While active, SIGTERM and SIGINT set `requested` (and `name`) instead of ending the process.

  Signal handlers can only be installed from the main thread; elsewhere (e.g. a notebook's worker
  thread) this is inactive and SIGTERM keeps its default behaviour. Under `jax.distributed` no
  handler is installed: JAX's preemption service owns SIGTERM and `reached` asks it.
  """

  def __init__(self):
    self.requested = False
    self.name = "SIGTERM"  # the signal that asked to stop (JAX's service only hears SIGTERM)
    self._previous: dict[int, object] = {}

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the step
    self.requested, self.name = True, signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step` (the same answer on every process)."""
    if jax.distributed.is_initialized():
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self) -> PreemptionSignal:
    if (threading.current_thread() is threading.main_thread()
        and not jax.distributed.is_initialized()):
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def _save_last_good(step: int, checkpointer, state, data_iter, meta: dict, controller: Any,
                    in_streak: bool) -> tuple[int | None, str]:
  """(the step now on disk as the last good one, or None and why not)."""
  if jax.process_count() > 1:
    return None, "a multi-process run cannot write one from a single process"
  if in_streak:
    return None, "the state is in a non-finite streak"
  if any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree.leaves(state)):
    return None, "the failing step had consumed the state"
  try:
    done = int(jax.device_get(state.step))
    if done not in (step, step - 1) or done == 0:
      return None, f"the state is at step {done}"
    if done == step - 1:
      data_iter.unread()  # the batch `step` read, if any, is read again on resume
    if done != checkpointer.latest_step():
      checkpointer.save(done, state, data_iter, meta, controller=controller)
      checkpointer.wait()
    return done, ""
  except Exception as e:  # pylint: disable=broad-except  # the first error is the one to report
    return None, f"{type(e).__name__}: {one_line(e)}"


def stopped_by_error(error: Exception, step: int, *, checkpointer, state, data_iter, meta: dict,
                     controller: Any, in_streak: bool) -> Exception:
  """Saves what can be saved after `error` ended the loop in `step`; the error to raise.

  `state` is the state of step `step` (the failing step got that far) or of `step - 1`; in the
  latter case the batch that `step` may have read is put back (`Lookahead.unread`), so the saved
  data position is the one that state was trained up to.
  """
  if in_streak and isinstance(error, (TrainingError, ConfigError)):
    return error  # the non-finite guard's own stop: no checkpoint during a streak
  saved, why = _save_last_good(step, checkpointer, state, data_iter, meta, controller, in_streak)
  if saved is not None:
    note = f"checkpoint {saved} holds the last good step, the same command resumes from it"
  else:
    note = f"no checkpoint written ({why}); the newest is {checkpointer.latest_step()}"
  if isinstance(error, (TrainingError, ConfigError)):
    detail = one_line(error)
  else:
    detail = f"{type(error).__name__}: {one_line(error)}"
    logging.info("training stopped by", exc_info=error)  # the traceback, with --verbosity=0
  return TrainingError(f"stopped in step {step}: {detail}; {note}")
