"""The dynamic objective mixture: draws (objective, configuration) per document piece from weights.

A `Mixture` is the packer's piece planner (`data.packing.PiecePlanner`): for each piece it draws a
configuration from its current weights with the piece's own generator, then a length in the
configuration's range that fits the room left in the row, and returns the piece's token count with
the objective bound to its parameters and reserved ids. It is immutable: `with_weights` gives a new
mixture sharing everything else, and its JSON `get_state` / `with_state` carry the weights through
the data iterator's state (see `data.pipeline.set_mixture_weights`). This module owns that state's
keys: other modules read and write it through `state_weights` / `put_state_weights` (a state may
lack the weights: a trainer whose controller checkpoints the mixture leaves them out).

Lengths that do not fit: a range's top is lowered to the room left in the row; if even its lower end
does not fit, the example closes the row and the packer plans the piece again in an empty row (with
the same generator seed, so the same configuration). Ranges are therefore respected except by a
document's leftover tail, which is used as it is, however short (no token is dropped).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import copy
import dataclasses
import functools
import hashlib
from typing import Any

import numpy as np

from birdie_jax.objectives import grid
from birdie_jax.objectives import registry
from birdie_jax.objectives.grid import Curriculum
from birdie_jax.objectives.registry import Objective

_WEIGHT_TOLERANCE = 1e-6
# The keys of a mixture's JSON state, as on disk in checkpoints: keep them (old ones must restore).
_WEIGHTS_KEY = "mixture_weights"
_NAMES_KEY = "mixture_names_sha256"


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The reserved ids objectives write (they never import the tokenizer)."""

  paradigms: Mapping[str, int]  # objective class -> paradigm token id
  sentinels: np.ndarray  # int32 sentinel ids, one per span of an example
  markers: Mapping[str, int]  # selective copying's '[COPY]', '[START]', ... -> id


def checked_weights(weights: Sequence[float] | np.ndarray, size: int) -> np.ndarray:
  """`weights` as a float64 copy; ValueError unless `size` finite values >= 0 summing to 1."""
  w = np.array(weights, np.float64)
  if w.shape != (size,):
    raise ValueError(f"mixture weights need shape ({size},), got {w.shape}")
  if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > _WEIGHT_TOLERANCE:
    raise ValueError(f"mixture weights must be finite, >= 0 and sum to 1 (sum {w.sum()!r})")
  return w


def state_weights(state: Mapping[str, Any]) -> np.ndarray | None:
  """The float64 weights a mixture's JSON state holds, or None if it was saved without them."""
  weights = state.get(_WEIGHTS_KEY)
  return None if weights is None else np.asarray(weights, np.float64)


def put_state_weights(state: dict[str, Any], weights: Sequence[float] | None) -> None:
  """Writes `weights` (exactly, as floats) into a mixture's JSON state; None removes them."""
  if weights is None:
    state.pop(_WEIGHTS_KEY, None)
  else:
    state[_WEIGHTS_KEY] = [float(w) for w in weights]


def _bind(configuration: grid.Configuration, ids: SpecialIds,
          append_prob: float | None) -> Objective:
  """The configuration's objective with its parameters and ids filled in."""
  params = dict(configuration.params)
  if configuration.objective in registry.SPAN_OBJECTIVES:
    params["sentinel_ids"] = ids.sentinels
  if configuration.objective == "selective_copying":
    params["marker_ids"] = ids.markers
  paradigm_id = None if append_prob is None else ids.paradigms[configuration.objective]
  return functools.partial(registry.OBJECTIVES[configuration.objective], paradigm_id=paradigm_id,
                           append_prob=append_prob or 0.0, **params)


def _max_tokens(curriculum: Curriculum, configuration: grid.Configuration) -> np.ndarray:
  """For each budget b in 0..seq_len, the longest piece whose example takes at most b positions."""
  lengths = registry.example_lengths(
      configuration.objective, configuration.params, np.arange(curriculum.seq_len + 1),
      paradigm=curriculum.append_prob is not None, max_spans=curriculum.num_sentinels)
  budgets = np.arange(curriculum.seq_len + 1)
  return np.searchsorted(lengths, budgets, side="right").astype(np.int64) - 1


class Mixture:
  """Weights over a curriculum's configurations, and the piece planner that samples from them."""

  def __init__(self, curriculum: Curriculum, ids: SpecialIds,
               weights: Sequence[float] | np.ndarray | None = None):
    if len(ids.sentinels) < curriculum.num_sentinels:
      raise ValueError(f"the curriculum needs {curriculum.num_sentinels} sentinels, the ids have "
                       f"{len(ids.sentinels)}")
    self.curriculum = curriculum
    self._units = tuple(c.unit for c in curriculum.configurations)
    self._ranges = tuple(c.lengths for c in curriculum.configurations)
    self._tables = tuple(_max_tokens(curriculum, c) for c in curriculum.configurations)
    self._objectives = tuple(_bind(c, ids, curriculum.append_prob)
                             for c in curriculum.configurations)
    self._fingerprint = hashlib.sha256("\n".join(curriculum.names).encode()).hexdigest()[:16]
    self._set_weights(curriculum.weights if weights is None else weights)

  @property
  def names(self) -> tuple[str, ...]:
    """Configuration names (the action space), in weight order."""
    return self.curriculum.names

  @property
  def seq_len(self) -> int:
    """The row length the mixture sizes pieces for."""
    return self.curriculum.seq_len

  @property
  def weights(self) -> np.ndarray:
    """A copy of the current weights (as set: they sum to 1 within 1e-6)."""
    return self._weights.copy()

  def _set_weights(self, weights: Sequence[float] | np.ndarray) -> None:
    self._weights = checked_weights(weights, len(self.names))  # kept exactly: resumes are exact
    self._cdf = np.cumsum(self._weights) / self._weights.sum()
    self._last = int(np.flatnonzero(self._weights)[-1])

  def with_weights(self, weights: Sequence[float] | np.ndarray) -> Mixture:
    """The same mixture with new weights (validated: shape, finite, >= 0, sum 1 within 1e-6)."""
    mixture = copy.copy(self)
    mixture._set_weights(weights)  # pylint: disable=protected-access
    return mixture

  def only(self, name: str) -> Mixture:
    """All weight on configuration `name` (e.g. for its validation set)."""
    weights = np.zeros(len(self.names))
    weights[self.names.index(name)] = 1.0
    return self.with_weights(weights)

  def get_state(self) -> dict[str, Any]:
    """JSON-able weights, with a fingerprint of the configuration names."""
    state: dict[str, Any] = {}
    put_state_weights(state, self._weights)
    state[_NAMES_KEY] = self._fingerprint
    return state

  def with_state(self, state: Mapping[str, Any]) -> Mixture:
    """The mixture with the weights of `get_state` (this one's if it has none); ValueError if its
    configurations differ."""
    if state[_NAMES_KEY] != self._fingerprint:
      raise ValueError("the saved mixture has other configurations than this curriculum "
                       f"({self.curriculum.name}, seq_len {self.seq_len}); use a new workdir")
    weights = state_weights(state)
    return self if weights is None else self.with_weights(weights)

  def plan(self, rng: np.random.Generator, room: int, seq_len: int) -> tuple[int, Objective]:
    """(tokens for the piece, bound objective) for a piece with `room` positions left in its row."""
    del seq_len  # the tables were made for self.seq_len (checked by the pipeline)
    i = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), self._last)
    unit, (low, high), table = self._units[i], self._ranges[i], self._tables[i]
    if unit == grid.FILL:
      tokens = int(table[room]) if table[room] >= 1 else int(table[-1])
      return tokens, self._objectives[i]
    top = min(high, room if unit == grid.POSITIONS else int(table[room]))
    if top < low:  # not even the shortest fits: this example will close the row
      top = high
    value = low + int(rng.random() * (top - low + 1))
    return (int(table[value]) if unit == grid.POSITIONS else value), self._objectives[i]
