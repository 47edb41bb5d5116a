"""The Grain input pipeline: documents -> per-process shard -> shuffle -> repeat -> tokenize -> pack
-> batch, yielding dicts of numpy arrays [batch_size, seq_len] (see `packing.FEATURES`): inputs
int32, targets int32, loss_mask float32, segment_ids int32, positions int32, prefix_mask bool.

Iterators checkpoint exactly with `get_state`/`set_state` or Orbax's
`grain.checkpoint.CheckpointSave/CheckpointRestore`; the state depends on `num_workers`, so keep it
fixed across restarts. Objectives enter through `make_example`: a plain objective
`(tokens, rng) -> (X, Y)` fills each row's remaining room, while a `packing.PiecePlanner` such as an
`objectives.mixture.Mixture` picks the objective and piece length per piece.

A mixture's weights are part of the iterator state, so they are checkpointed with it, and
`set_mixture_weights(iterator, weights)` changes them by rewriting that state: the next batch is
the first drawn from the new weights, with no stale backlog, also with worker processes (Grain
restarts them at the consumed position, which takes a moment: change weights at evaluations, not
every step). Every process must set the same weights. A checkpoint whose mixture is saved elsewhere
(the trainer's controller state) saves `without_mixture_weights(iterator)` instead: that state
restores the position and leaves the weights to the caller.

Several weighted sources (`data.sources`, `source_mixture.MixtureDocuments`) are packed each on
its own and mixed row by row before batching (`mix_dataset`): each row comes from one source,
drawn by weight; the iterator state then holds every source's position, the sampler's draw count
and the tokens drawn from each source (`mix_dataset.source_tokens`).
"""
from __future__ import annotations

from collections.abc import Sequence
import copy
import functools
from typing import Any

from absl import flags
import grain
import numpy as np

from birdie_jax.data import special_tokens
from birdie_jax.data.mix_dataset import MIX_KEY
from birdie_jax.data.mix_dataset import MixIterDataset
from birdie_jax.data.pack_dataset import PackIterDataset
from birdie_jax.data.pack_dataset import planner_states
from birdie_jax.data.packing import DocumentPacker
from birdie_jax.data.packing import PiecePlanner
from birdie_jax.data.packing import Row
from birdie_jax.data.source_mixture import derived_seed
from birdie_jax.data.source_mixture import MixtureDocuments
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.objectives.mixture import checked_weights
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.objectives.mixture import put_state_weights
from birdie_jax.objectives.mixture import state_weights
from birdie_jax.objectives.next_token import next_token_prediction
from birdie_jax.objectives.registry import Objective

# Tokenization runs in a few threads ahead of the packer (cheap on 2 cores, bounded memory).
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)


class _TokenizeWithIndex(grain.transforms.MapWithIndex):
  """text -> (index in the repeated stream, int32 ids); the index seeds the document's pieces."""

  def __init__(self, tokenizer: Tokenizer):
    self._tokenizer = tokenizer

  def map_with_index(self, index: int, text: str) -> tuple[int, np.ndarray]:
    """(index, ids of text)."""
    return index, self._tokenizer.encode(text)


def make_train_dataset(documents: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                       batch_size: int, seed: int, process_index: int = 0, process_count: int = 1,
                       make_example: PiecePlanner | Objective = next_token_prediction,
                       gap: int = 0, num_workers: int = 0) -> grain.IterDataset:
  """An infinite dataset of packed batches for this process (`batch_size` rows per process).

  Process p reads documents p, p + process_count, ...; every epoch is reshuffled; the examples of
  piece k of the i-th document read draw from `default_rng([seed, process_index, i, k])`.
  `documents` of several sources (`source_mixture.MixtureDocuments`) are packed source by source,
  each with its own seed (`source_mixture.derived_seed`), and each row's source is drawn by weight
  (`mix_dataset`).
  """
  if batch_size < 1:
    raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index {process_index} is not in [0, {process_count})")
  if isinstance(make_example, Mixture) and make_example.seq_len != seq_len:
    raise ConfigError(f"the mixture was built for seq_len {make_example.seq_len}, not {seq_len}")
  rows = functools.partial(_packed_rows, tokenizer=tokenizer, seq_len=seq_len,
                           process_index=process_index, process_count=process_count,
                           make_example=make_example, gap=gap)
  if isinstance(documents, MixtureDocuments):
    sources = {}
    for name, part in documents.parts.items():
      try:
        sources[name] = rows(part, seed=derived_seed(seed, name))
      except ConfigError as e:
        raise ConfigError(f"data source {name}: {e}") from None
    dataset = MixIterDataset(sources, [documents.weights[name] for name in sources],
                             seed=derived_seed(seed, MIX_KEY), process_index=process_index)
  else:
    dataset = rows(documents, seed=seed)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (notebooks, tests)
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return dataset


def _packed_rows(documents: Sequence[str], *, tokenizer: Tokenizer, seq_len: int, seed: int,
                 process_index: int, process_count: int,
                 make_example: PiecePlanner | Objective, gap: int) -> grain.IterDataset:
  """This process's packed rows of `documents`, endlessly (see `make_train_dataset`)."""
  shard = grain.MapDataset.source(documents)[process_index::process_count]
  if not len(shard):
    raise ConfigError(f"process {process_index} of {process_count} gets no document "
                      f"({len(documents)} in all)")
  packer = functools.partial(
      DocumentPacker, seq_len, begin_id=tokenizer.special_id(special_tokens.BEGIN),
      pad_id=tokenizer.pad_id, make_example=make_example, gap=gap,
      gap_id=tokenizer.special_id(special_tokens.GAP), seed=seed, process_index=process_index)
  packer()  # validates seq_len and gap now rather than inside an iterator
  tokens = (shard.shuffle(seed=seed).repeat(None).map_with_index(_TokenizeWithIndex(tokenizer))
            .to_iter_dataset(_READ_OPTIONS))
  return PackIterDataset(tokens, packer)


def make_validation_batches(documents: Sequence[str], tokenizer: Tokenizer, *, seq_len: int,
                            batch_size: int, num_batches: int, seed: int,
                            make_example: PiecePlanner | Objective = next_token_prediction,
                            gap: int = 0) -> list[Row]:
  """A fixed list of `num_batches` batches of `documents`, laid out exactly as in training.

  The same seed gives the same batches; documents are reused (reshuffled) if there are too few.
  """
  iterator = iter(make_train_dataset(documents, tokenizer, seq_len=seq_len, batch_size=batch_size,
                                     seed=seed, make_example=make_example, gap=gap))
  try:
    return [next(iterator) for _ in range(num_batches)]
  finally:
    iterator.close()


def make_validation_sets(documents: Sequence[str], tokenizer: Tokenizer, mixture: Mixture, *,
                         seq_len: int, batch_size: int, num_batches: int, seed: int,
                         gap: int = 0) -> dict[str, list[Row]]:
  """For each configuration of `mixture`, `num_batches` fixed batches of it alone.

  Every configuration gets the same documents in the same order, laid out exactly as in training;
  the same seed gives the same sets.
  """
  return {name: make_validation_batches(documents, tokenizer, seq_len=seq_len,
                                        batch_size=batch_size, num_batches=num_batches, seed=seed,
                                        make_example=mixture.only(name), gap=gap)
          for name in mixture.names}


def mixture_weights(iterator: grain.DatasetIterator) -> np.ndarray:
  """The mixture weights the iterator draws its next batch from."""
  states = planner_states(iterator.get_state())
  if not states:
    raise ValueError("this data iterator has no objective mixture")
  return state_weights(states[0])


def set_mixture_weights(iterator: grain.DatasetIterator, weights: Sequence[float] | np.ndarray
                        ) -> None:
  """Makes the iterator draw its next batches from `weights` (over the mixture's configurations).

  The iterator keeps its position: the data after the change is what a run restored from this
  point with these weights would see. Raises ValueError for weights of the wrong shape, negative,
  non-finite or not summing to 1.
  """
  state = copy.deepcopy(iterator.get_state())
  planners = planner_states(state)
  if not planners:
    raise ValueError("this data iterator has no objective mixture")
  values = checked_weights(weights, len(state_weights(planners[0])))
  for planner in planners:
    put_state_weights(planner, values)
  iterator.set_state(state)


class _WithoutMixtureWeights(grain.DatasetIterator):
  """What a checkpoint saves of its parent iterator when the mixture is saved elsewhere."""

  def __next__(self) -> Any:
    raise TypeError("a checkpoint view of a data iterator is not read from")

  def get_state(self) -> dict[str, Any]:
    """The iterator's state without the weights in its planner states (position, fingerprint)."""
    state = copy.deepcopy(self._parent.get_state())
    for planner in planner_states(state):
      put_state_weights(planner, None)
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    """Sets the iterator's state; one without weights keeps the iterator's current weights."""
    self._parent.set_state(state)

  def close(self) -> None:
    """Leaves the iterator open: a view owns nothing (Grain closes an iterator's parents, also
    when it is garbage collected)."""
    self._closed = True


def without_mixture_weights(iterator: grain.DatasetIterator) -> grain.DatasetIterator:
  """A view of `iterator` for `grain.checkpoint.CheckpointSave`: its state less the mixture weights
  (which a restore then keeps from the iterator as built, or sets with `set_mixture_weights`)."""
  return _WithoutMixtureWeights(iterator)
