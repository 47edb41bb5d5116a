"""A Grain iterator read one batch ahead, so the host prepares batch N+1 while the device runs N.

The training loop dispatches step N (asynchronously), calls `prefetch()` to build the next batch
on the host meanwhile, and only then waits for step N's results. Checkpoints stay exact: the state
this iterator reports is the position of the batch `next` returns next (before the one held), and
`set_state` (a restore, or `set_mixture_weights`) drops the held batch, which is then drawn again
from the new state. So a run with the lookahead sees the same batches as one without.

Read errors (an OSError: a file removed or unreachable on NFS or gcsfuse) are retried `retries`
times with back-off from the same position, then raised as one-line TrainingError by the `next()`
of the batch they belong to, never by `prefetch()`, so the training loop meets them at the step
that needs that batch, holding the state of the step before (which it then checkpoints).
`unread()` puts back the batch `next()` last returned (a step that failed after reading it).
"""
from __future__ import annotations

import copy
import time
from typing import Any

import grain

from birdie_jax.errors import TrainingError

_FIRST_RETRY_S = 0.5  # back-off before the first retry, doubling up to _MAX_RETRY_S
_MAX_RETRY_S = 30.0


class Lookahead(grain.DatasetIterator):
  """Wraps `iterator`; `prefetch()` reads its next element ahead of `next()`."""

  def __init__(self, iterator: grain.DatasetIterator, retries: int = 0):
    super().__init__(iterator)
    self._retries = retries
    self._held: Any = None
    self._held_from: dict[str, Any] | None = None  # the parent's state before the held element
    self._error: TrainingError | None = None  # a failed read, raised by the next `next()`
    self._returned_from: dict[str, Any] | None = None  # the state before `next()`'s last element

  def _read(self, state: dict[str, Any]) -> Any:
    """The parent's next element, retrying read errors from `state`."""
    for attempt in range(self._retries + 1):
      try:
        return next(self._parent)
      except OSError as e:
        self._parent.set_state(copy.deepcopy(state))  # the next try (or a resume) starts here
        if attempt == self._retries:
          raise TrainingError(f"reading the training data failed {attempt + 1} time(s) (data."
                              f"read_retries={self._retries}): {type(e).__name__}: "
                              f"{' '.join(str(e).split())}") from e
        time.sleep(min(_FIRST_RETRY_S * 2 ** attempt, _MAX_RETRY_S))

  def prefetch(self) -> None:
    """Reads the next element now (no-op if one is held already or the last read failed)."""
    if self._held_from is None and self._error is None:
      state = copy.deepcopy(self._parent.get_state())
      try:
        self._held = self._read(state)
      except TrainingError as e:
        self._error = e
        return
      self._held_from = state

  def __next__(self) -> Any:
    self._returned_from = None
    self.prefetch()
    if self._error is not None:
      error, self._error = self._error, None
      raise error
    element, self._returned_from = self._held, self._held_from
    self._held, self._held_from = None, None
    return element

  def unread(self) -> None:
    """Puts back the element `next()` last returned (no-op after a failed or no `next()`)."""
    if self._returned_from is not None:
      self.set_state(self._returned_from)

  def get_state(self) -> dict[str, Any]:
    if self._held_from is not None:
      return copy.deepcopy(self._held_from)
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._held, self._held_from, self._error, self._returned_from = None, None, None, None
    self._parent.set_state(state)

  def close(self) -> None:
    """Closes the wrapped iterator (its worker processes, if any)."""
    self._held, self._held_from, self._returned_from = None, None, None
    close = getattr(self._parent, "close", None)
    if close is not None:
      close()
