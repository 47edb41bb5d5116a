"""Greedy packing of (X, Y) examples into fixed-length rows, in the universal layout (paper A.3).

One example becomes, at consecutive positions of a row,
  inputs      X + [BEGIN] + Y[:-1]
  targets     [0] * len(X) + Y          (targets[t] is what position t must predict)
  loss_mask   0 on X, 1 on Y            prefix_mask  1 on X, 0 elsewhere
  positions   0, 1, 2, ...              segment_ids  1, 2, 3, ... per example in the row
Padding has input pad_id, target 0, masks 0, segment 0; optional `gap` spacer tokens between
examples have the `<gap>` input and segment 0 as well. Documents are cut into pieces, so no token is
dropped: pure numpy, with per-example slice writes (no per-token Python loop).
"""
from __future__ import annotations

from collections.abc import Iterable
import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np

from birdie_jax.errors import ConfigError
from birdie_jax.objectives.next_token import next_token_prediction
from birdie_jax.objectives.registry import Objective

Row = dict[str, np.ndarray]  # one packed row (or batch): feature name -> array
FEATURES = {"inputs": np.int32, "targets": np.int32, "loss_mask": np.float32,
            "segment_ids": np.int32, "positions": np.int32, "prefix_mask": np.bool_}


@runtime_checkable
class PiecePlanner(Protocol):
  """Decides, for each document piece, how many tokens it takes and which objective shapes it.

  This is the hook for Birdie's objective mixture: `plan` draws an objective and its configuration
  (from the mixture's current weights) with the piece's own `rng`, and returns the piece length that
  configuration wants, e.g. 128-256 tokens for a copying configuration, with the objective bound
  to its parameters (`functools.partial(copying, ...)`). The same `rng` then goes to the objective.
  `room` is the space left in the current row (`seq_len` in an empty one). An example longer than
  `room` closes the row; the piece is then planned again, with a fresh `rng` of the same seed, in an
  empty row. An example longer than `seq_len` is an error.
  """

  def plan(self, rng: np.random.Generator, room: int, seq_len: int) -> tuple[int, Objective]:
    """(number of document tokens for this piece, objective to apply to them)."""


@runtime_checkable
class StatefulPlanner(PiecePlanner, Protocol):
  """A planner with JSON state (the mixture weights) that travels in the iterator's checkpoint."""

  def get_state(self) -> dict[str, Any]:
    """JSON-able state."""

  def with_state(self, state: dict[str, Any]) -> StatefulPlanner:
    """A planner like this one with `state` (planners are immutable)."""


@dataclasses.dataclass(frozen=True)
class FillRoom:
  """Planner for one objective whose example is as long as its piece (NTP, prefix LM).

  Each piece fills the room left in the row, so such rows carry no padding and a long document is
  cut into pieces of at most `seq_len` tokens.
  """

  objective: Objective

  def plan(self, rng: np.random.Generator, room: int, seq_len: int) -> tuple[int, Objective]:
    """The whole room, with the fixed objective."""
    del rng, seq_len
    return room, self.objective


def as_planner(make_example: PiecePlanner | Objective) -> PiecePlanner:
  """`make_example` itself if it is a PiecePlanner, else `FillRoom(make_example)`."""
  return make_example if isinstance(make_example, PiecePlanner) else FillRoom(make_example)


@dataclasses.dataclass
class PackStats:
  """Counts over the rows produced so far."""

  rows: int = 0
  tokens: int = 0  # positions inside an example (segment id > 0)
  padding: int = 0  # positions outside any example: end-of-row padding and gaps

  @property
  def padding_fraction(self) -> float:
    """Share of row positions that carry no example."""
    total = self.tokens + self.padding
    return self.padding / total if total else 0.0


def padding_fraction(batch: Row) -> float:
  """Share of positions of a packed batch that carry no example (segment id 0)."""
  return float(np.mean(batch["segment_ids"] == 0))


class _Row:
  """One row being filled with examples."""

  def __init__(self, seq_len: int, *, begin_id: int, pad_id: int, gap: int, gap_id: int):
    self._seq_len, self._begin_id, self._pad_id = seq_len, begin_id, pad_id
    self._gap, self._gap_id = gap, gap_id
    self._new()

  def _new(self) -> None:
    self._arrays = {name: np.zeros(self._seq_len, dtype) for name, dtype in FEATURES.items()}
    self._arrays["inputs"][:] = self._pad_id
    self.used = 0
    self.examples = 0

  @property
  def room(self) -> int:
    """Positions available to the next example (after its gap)."""
    return self._seq_len - self.used - (self._gap if self.examples else 0)

  def add(self, x: np.ndarray, y: np.ndarray) -> None:
    """Writes one example (it must fit in `room`)."""
    a = self._arrays
    if self.examples:
      a["inputs"][self.used:self.used + self._gap] = self._gap_id
      self.used += self._gap
    s, p, n = self.used, self.used + len(x), self.used + len(x) + len(y)
    a["inputs"][s:p] = x
    a["inputs"][p] = self._begin_id
    a["inputs"][p + 1:n] = y[:-1]
    a["targets"][p:n] = y
    a["loss_mask"][p:n] = 1.0
    a["prefix_mask"][s:p] = True
    a["positions"][s:n] = np.arange(n - s)
    self.examples += 1
    a["segment_ids"][s:n] = self.examples
    self.used = n

  def take(self) -> Row:
    """The finished (padded) row; the builder starts a new empty one."""
    row = self._arrays
    self._new()
    return row


class DocumentPacker:
  """Cuts token documents into pieces, turns each piece into an example and packs rows greedily.

  Each piece draws from its own generator `default_rng([seed, process_index, doc_index,
  piece_index])`, so examples are reproducible and independent across hosts, and the packer's
  position between rows is fully described by (document, `offset`, `piece_index`): the row being
  built is always empty when a row has just been returned.
  """

  def __init__(self, seq_len: int, *, begin_id: int, pad_id: int,
               make_example: PiecePlanner | Objective = next_token_prediction, gap: int = 0,
               gap_id: int = 0, seed: int = 0, process_index: int = 0):
    if seq_len < 1 or gap < 0:
      raise ConfigError(f"packing needs seq_len >= 1 and gap >= 0, got {seq_len} and {gap}")
    self._seq_len = seq_len
    self.planner = as_planner(make_example)  # replaceable between rows (new mixture weights)
    self._row = _Row(seq_len, begin_id=begin_id, pad_id=pad_id, gap=gap, gap_id=gap_id)
    self._seed = (seed, process_index)
    self.stats = PackStats()
    self.reset()

  def reset(self) -> None:
    """Drops the current document and the partly built row."""
    self._row.take()
    self._tokens = None
    self._doc_index = self.offset = self.piece_index = 0

  @property
  def needs_document(self) -> bool:
    """True when the current document is used up (or there is none)."""
    return self._tokens is None

  def set_document(self, doc_index: int, tokens: np.ndarray, offset: int = 0,
                   piece_index: int = 0) -> None:
    """Starts cutting `tokens` (document number `doc_index`) at `offset`; empty ones are skipped."""
    if offset < len(tokens):
      self._tokens, self._doc_index = np.asarray(tokens, np.int32), doc_index
      self.offset, self.piece_index = offset, piece_index

  def fill(self) -> Row | None:
    """Adds pieces of the current document to the row.

    Returns:
      The row once it is full, or None if the document ran out first (then call `set_document`).
    """
    while self._tokens is not None:
      room = self._row.room
      rng = np.random.default_rng([*self._seed, self._doc_index, self.piece_index])
      length, objective = self.planner.plan(rng, room, self._seq_len)
      if length < 1:
        raise ValueError(f"the piece planner asked for a piece of {length} tokens")
      piece = self._tokens[self.offset:self.offset + length].copy()  # objectives may write to it
      x, y = (np.asarray(a, np.int32) for a in objective(piece, rng))
      if not len(y):
        raise ValueError(f"objective {objective} made no targets for a {len(piece)}-token piece")
      if len(x) + len(y) > room:
        if not self._row.examples:
          raise ValueError(f"objective {objective} made an example of {len(x) + len(y)} positions, "
                           f"longer than seq_len {self._seq_len}")
        return self._finish()
      self._row.add(x, y)
      self.offset += len(piece)
      self.piece_index += 1
      if self.offset >= len(self._tokens):
        self._tokens = None
      if self._row.room < 1:
        return self._finish()
    return None

  def flush(self) -> Row | None:
    """The partly filled row, padded, or None if it is empty (at the end of a finite stream)."""
    return self._finish() if self._row.examples else None

  def _finish(self) -> Row:
    row = self._row.take()
    tokens = int(np.count_nonzero(row["segment_ids"]))
    self.stats.rows += 1
    self.stats.tokens += tokens
    self.stats.padding += self._seq_len - tokens
    return row


def pack_documents(documents: Iterable[np.ndarray], *, seq_len: int, begin_id: int, pad_id: int,
                   make_example: PiecePlanner | Objective = next_token_prediction, gap: int = 0,
                   gap_id: int = 0, seed: int = 0) -> tuple[Row, PackStats]:
  """Packs token documents (in order; the i-th has doc_index i) into rows [N, seq_len] and stats."""
  packer = DocumentPacker(seq_len, begin_id=begin_id, pad_id=pad_id, make_example=make_example,
                          gap=gap, gap_id=gap_id, seed=seed)
  rows = []
  for index, tokens in enumerate(documents):
    packer.set_document(index, tokens)
    while (row := packer.fill()) is not None:
      rows.append(row)
  if (row := packer.flush()) is not None:
    rows.append(row)
  batch = {name: np.stack([r[name] for r in rows]) if rows else np.zeros((0, seq_len), dtype)
           for name, dtype in FEATURES.items()}
  return batch, packer.stats
