"""A Grain IterDataset that packs a stream of (doc_index, token ids) into rows, resumable exactly.

The checkpoint state is JSON: the parent's state from *before* the document currently being cut,
plus the offset and piece index within it, and the piece planner's state (the mixture weights) when
it has one. Restoring re-reads (and re-tokenizes) that document and continues cutting at the offset;
because every piece draws from its own seeded generator and rows are only handed out whole, the rows
after a restore are identical to those of an uninterrupted run with the same weights.

This module owns the pack stage's keys in an iterator state: `planner_states(state)` finds every
planner state inside a whole (possibly multi-worker) iterator state; what a planner state holds is
the planner's business (`objectives.mixture.state_weights`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain

from birdie_jax.data.packing import DocumentPacker
from birdie_jax.data.packing import Row
from birdie_jax.data.packing import StatefulPlanner
from birdie_jax.errors import ConfigError

_PLANNER_KEY = "planner"  # the pack stage's planner state; on disk in checkpoints: keep the name


def planner_states(state: Any) -> list[dict[str, Any]]:
  """Every pack stage's planner state inside a (possibly multi-worker) iterator state: the dicts
  themselves, so a caller may edit a copy of the state in place and set it back."""
  if isinstance(state, dict):
    found = [state[_PLANNER_KEY]] if isinstance(state.get(_PLANNER_KEY), dict) else []
    return found + [s for key, value in state.items() if key != _PLANNER_KEY
                    for s in planner_states(value)]
  if isinstance(state, (list, tuple)):
    return [s for value in state for s in planner_states(value)]
  return []


class _PackIterator(grain.DatasetIterator):
  """Pulls documents from the parent iterator and yields packed rows."""

  def __init__(self, parent: grain.DatasetIterator, make_packer: Callable[[], DocumentPacker]):
    super().__init__(parent)
    self._packer = make_packer()
    self._doc_state = None  # parent state before the current document
    self._resume = None  # (offset, piece_index) for the next document read, after set_state

  def __next__(self) -> Row:
    while True:
      if self._packer.needs_document:
        state = self._parent.get_state()
        try:
          doc_index, tokens = next(self._parent)
        except StopIteration:
          row = self._packer.flush()
          if row is None:
            raise
          return row
        self._doc_state = state
        self._packer.set_document(doc_index, tokens, *(self._resume or (0, 0)))
        self._resume = None
      row = self._packer.fill()
      if row is not None:
        return row

  def get_state(self) -> dict[str, Any]:
    """JSON state: 'parent' (before the current document), 'in_document', 'offset', 'piece_index'.

    A stateful planner (a mixture) adds its state (the weights) under `_PLANNER_KEY`.
    """
    if self._resume is not None:
      offset, piece_index = self._resume
      state = dict(parent=self._parent.get_state(), in_document=True, offset=offset,
                   piece_index=piece_index)
    elif self._packer.needs_document:
      state = dict(parent=self._parent.get_state(), in_document=False, offset=0, piece_index=0)
    else:
      state = dict(parent=self._doc_state, in_document=True, offset=self._packer.offset,
                   piece_index=self._packer.piece_index)
    if isinstance(self._packer.planner, StatefulPlanner):
      state[_PLANNER_KEY] = self._packer.planner.get_state()
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    """Rewinds the parent to `state['parent']`; that document is re-read and cut at the offset."""
    if "parent" not in state:  # e.g. a data.sources mixture's position (data/mix_dataset.py)
      raise ConfigError("the saved data position is not of one data source (a data.sources "
                        "mixture?), and this run reads data.source: it does not carry over; "
                        "use a new --workdir")
    planner = self._packer.planner
    if _PLANNER_KEY in state:
      if not isinstance(planner, StatefulPlanner):
        raise ValueError("the saved data state holds mixture weights, but this pipeline has no "
                         "mixture (a different curriculum?)")
      planner = planner.with_state(state[_PLANNER_KEY])
    self._parent.set_state(state["parent"])
    self._packer.reset()
    self._packer.planner = planner
    self._resume = (state["offset"], state["piece_index"]) if state["in_document"] else None

  def __str__(self) -> str:
    return "PackIterator"


class PackIterDataset(grain.IterDataset):
  """Packs the parent's (doc_index, int32 tokens) elements into rows of `seq_len` (see packing)."""

  def __init__(self, parent: grain.IterDataset, make_packer: Callable[[], DocumentPacker]):
    super().__init__(parent)
    self._make_packer = make_packer

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._make_packer)

  def __str__(self) -> str:
    return "PackIterDataset"
