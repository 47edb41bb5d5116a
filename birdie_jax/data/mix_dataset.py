"""A Grain IterDataset that draws each packed row from one of several sources, by weight; resumable
exactly.

Each source is its own packed-row pipeline (`pipeline.make_train_dataset` builds them: shard ->
shuffle -> repeat -> tokenize -> pack). Row n's source is drawn from `default_rng([seed,
process_index, worker_index, n])` against the cumulative weights, so the sampler's RNG state is
the count `draws`, and the rows of a source are pulled only when it is drawn. The checkpoint state
is JSON:

    {"source_mixture": {"draws": n,
                        "sources": {name: {"position": <that source's pack state>,
                                           "rows": rows drawn, "tokens": tokens drawn}}}}

A restore sets every source back to its position and the sampler to `draws`, so the rows after it
are those of an uninterrupted run. Weights are not in the state: they come from the config, so a
resume with new weights (`resume.allow=data.sources`) continues every source where it stopped and
draws the next row from the new weights; a source new to the restored run starts at its beginning,
and a source left out is dropped, with one line saying so. `tokens` counts a row's positions that
hold an example (segment id > 0: no padding, no gaps), so the sources' counts add up to the
tokens of every row drawn; `source_tokens(state)` reads them from a whole (possibly multi-worker)
iterator state. The objective mixture's planner states sit inside each position, where
`pack_dataset.planner_states` finds (and `set_mixture_weights` rewrites) them all.

With Grain worker processes (`data.num_workers`), worker i of n reads slice i::n of every source
(`set_slice`) and draws its own rows with its own worker index.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import copy
from typing import Any

import grain
import numpy as np

from birdie_jax.console import log_progress
from birdie_jax.data.packing import Row
from birdie_jax.data.source_mixture import cumulative
from birdie_jax.data.source_mixture import pick
from birdie_jax.errors import ConfigError

MIX_KEY = "source_mixture"  # on disk in checkpoints: keep the name


def mixture_states(state: Any) -> list[dict[str, Any]]:
  """Every mixing stage's state inside a (possibly multi-worker) iterator state."""
  if isinstance(state, dict):
    if isinstance(state.get(MIX_KEY), dict):
      return [state[MIX_KEY]]
    return [s for value in state.values() for s in mixture_states(value)]
  if isinstance(state, (list, tuple)):
    return [s for value in state for s in mixture_states(value)]
  return []


def source_tokens(state: Any) -> dict[str, int]:
  """{source name: tokens drawn} summed over the mixing stages (workers) of an iterator state;
  {} for a pipeline of one source."""
  totals: dict[str, int] = {}
  for mix in mixture_states(state):
    for name, source in mix["sources"].items():
      totals[name] = totals.get(name, 0) + int(source["tokens"])
  return totals


def _slice_sources(dataset: grain.IterDataset, sl: slice, sequential_slice: bool) -> None:
  """Slices `dataset` in place for one worker, as Grain does for a pipeline of one source: at the
  first stage that can (`to_iter_dataset`'s, which slices the map dataset before it)."""
  if hasattr(dataset, "set_slice"):
    dataset.set_slice(sl, sequential_slice)
    return
  if not dataset.parents:
    raise TypeError(f"cannot slice {dataset} for a Grain worker")
  for parent in dataset.parents:
    _slice_sources(parent, sl, sequential_slice)


class _MixIterator(grain.DatasetIterator):
  """Draws each row's source, pulls the row from that source's iterator and counts it."""

  def __init__(self, parents: Sequence[grain.DatasetIterator], names: Sequence[str],
               cum: np.ndarray, seed: tuple[int, ...]):
    super().__init__(list(parents))
    self._names, self._cum, self._seed = tuple(names), cum, seed
    self._draws = 0
    self._rows = [0] * len(names)
    self._tokens = [0] * len(names)
    # The sources' starting states: where a source new to a restored run starts.
    self._fresh = [copy.deepcopy(parent.get_state()) for parent in self._parents]

  def __next__(self) -> Row:
    k = pick(self._cum, np.random.default_rng([*self._seed, self._draws]).random())
    row = next(self._parents[k])  # a read error leaves the counts as they were
    self._draws += 1
    self._rows[k] += 1
    self._tokens[k] += int(np.count_nonzero(row["segment_ids"]))
    return row

  def get_state(self) -> dict[str, Any]:
    """See the module docstring."""
    return {MIX_KEY: {"draws": self._draws, "sources": {
        name: {"position": parent.get_state(), "rows": rows, "tokens": tokens}
        for name, parent, rows, tokens in zip(self._names, self._parents, self._rows,
                                              self._tokens)}}}

  def set_state(self, state: dict[str, Any]) -> None:
    """Moves every source to its saved position and the sampler to the saved draw count."""
    mix = state.get(MIX_KEY) if isinstance(state, dict) else None
    if not isinstance(mix, dict):
      raise ConfigError("the saved data position is of one data source (data.source), and this "
                        "run mixes data.sources: the position does not carry over; use a new "
                        "--workdir")
    saved = mix["sources"]
    for k, (name, parent) in enumerate(zip(self._names, self._parents)):
      source = saved.get(name)
      parent.set_state(source["position"] if source else copy.deepcopy(self._fresh[k]))
      self._rows[k] = int(source["rows"]) if source else 0
      self._tokens[k] = int(source["tokens"]) if source else 0
    self._draws = int(mix["draws"])
    new = [name for name in self._names if name not in saved]
    dropped = [name for name in saved if name not in self._names]
    if new or dropped:
      log_progress("data.sources changed since the saved data position: "
                   + "; ".join(filter(None, [
                       new and f"{', '.join(new)} start(s) at the beginning",
                       dropped and f"{', '.join(dropped)} dropped"])))

  def __str__(self) -> str:
    return f"MixIterator({', '.join(self._names)})"


class MixIterDataset(grain.IterDataset):
  """Rows drawn from `parents` (name -> a dataset of packed rows) in proportion to `weights`."""

  def __init__(self, parents: Mapping[str, grain.IterDataset], weights: Sequence[float], *,
               seed: int, process_index: int = 0):
    if len(weights) != len(parents):
      raise ValueError(f"{len(weights)} weights for {len(parents)} sources")
    super().__init__(list(parents.values()))
    self._names = tuple(parents)
    self._cum = cumulative(weights)
    self._seed = (seed, process_index)
    self._worker = 0  # worker i of n draws with i (set by Grain's `mp_prefetch` slicing)

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """Grain's worker slicing: every source reads `sl`, and the draws depend on the worker."""
    self._worker = sl.start or 0
    for parent in self._parents:
      _slice_sources(parent, sl, sequential_slice)

  def __iter__(self) -> _MixIterator:
    return _MixIterator([p.__iter__() for p in self._parents], self._names, self._cum,
                        (*self._seed, self._worker))

  def __str__(self) -> str:
    return f"MixIterDataset({', '.join(self._names)})"
