"""A Grain iterator read one batch ahead, so the host prepares batch N+1 while the device runs N.

The training loop dispatches step N (asynchronously), calls `prefetch()` to build the next batch
on the host meanwhile, and only then waits for step N's results. Checkpoints stay exact: the state
this iterator reports is the position of the batch `next` returns next (before the one held), and
`set_state` (a restore, or `set_mixture_weights`) drops the held batch, which is then drawn again
from the new state. So a run with the lookahead sees the same batches as one without.
"""
from __future__ import annotations

import copy
from typing import Any

import grain


class Lookahead(grain.DatasetIterator):
  """Wraps `iterator`; `prefetch()` reads its next element ahead of `next()`."""

  def __init__(self, iterator: grain.DatasetIterator):
    super().__init__(iterator)
    self._held: Any = None
    self._held_from: dict[str, Any] | None = None  # the parent's state before the held element

  def prefetch(self) -> None:
    """Reads the next element now (no-op if one is held already)."""
    if self._held_from is None:
      state = copy.deepcopy(self._parent.get_state())
      self._held = next(self._parent)
      self._held_from = state

  def __next__(self) -> Any:
    self.prefetch()
    element, self._held, self._held_from = self._held, None, None
    return element

  def get_state(self) -> dict[str, Any]:
    if self._held_from is not None:
      return copy.deepcopy(self._held_from)
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._held, self._held_from = None, None
    self._parent.set_state(state)

  def close(self) -> None:
    """Closes the wrapped iterator (its worker processes, if any)."""
    self._held, self._held_from = None, None
    close = getattr(self._parent, "close", None)
    if close is not None:
      close()
