"""Instruction-tuning batches: records -> examples laid out as the run reads prompts -> packed rows.

    data = SFTData.build(conversations, tokenizer, layout, paradigm_id, seq_len=..., seed=...)
    dataset = data.train_dataset(batch_size=8, seed=0)   # endless Grain batches, resumable
    batches = data.validation_batches(batch_size=8)     # the whole validation split, fixed

Layout (`evals.layout.Layout`, the evaluations' and decoding's): an example's prompt P and target
T (`data.sft_records.encode`: T = the replies with their <eos>, and the later turns' context)
become, at consecutive positions of a row,
  prefix        inputs [paradigm] + P + [BEGIN] + T[:-1]   targets 0.. then T   prefix_mask on
                [paradigm] + P: a Birdie model reads the prompt in both directions
  continuation  inputs [BEGIN] + P + T[:-1]                targets P + T        no prefix
with `loss_mask` 1 on the reply tokens only (never on P, nor on a later turn's context). Examples
are packed greedily in order into rows of `seq_len` with `segment_ids` 1, 2, ... and positions
restarting at 0 for each, as pre-training packs documents: every model family resets its
recurrence, convolution and attention at a segment change, so an example's loss is the same alone
or packed. An example longer than `seq_len` is left out (counted in one warning line).

Split: a seeded permutation of the records; the first `val_fraction` of it (at least one record)
is the validation split, packed once in order (all of it is evaluated, padded with empty rows to
whole batches), the rest trains. Training rows are packed once from a second seeded permutation;
each epoch then visits the rows in a new order (Grain's shuffle, reseeded per epoch), and process
p of n reads rows p, p + n, ... The iterator's state is its row count (Grain's own), so a resumed
run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import grain
import numpy as np

from birdie_jax.console import log_warning
from birdie_jax.data import sft_records
from birdie_jax.data.packing import FEATURES, Row
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals.layout import Layout

_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)


def split(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) record indices, each in file order."""
  if count < 2:
    raise ConfigError(f"fine-tuning needs at least 2 records (one held out for validation), got "
                      f"{count}")
  order = np.random.default_rng([seed, 0]).permutation(count)
  n_val = min(count - 1, max(1, round(val_fraction * count)))
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def plan_rows(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
  """Greedy (next-fit) rows: the indices of `lengths`, in order, a new row when one is full."""
  rows: list[list[int]] = []
  used = seq_len
  for i, n in enumerate(lengths):
    if used + n > seq_len:
      rows.append([])
      used = 0
    rows[-1].append(i)
    used += n
  return rows


@dataclasses.dataclass(frozen=True)
class SFTData:
  """Examples of one run, laid out for its model; `train` and `val` index `examples`."""

  examples: list[sft_records.Example]
  layout: Layout
  paradigm_id: int | None
  seq_len: int
  train: np.ndarray
  val: np.ndarray

  @classmethod
  def build(cls, conversations: Sequence[list[sft_records.Message]], tokenizer: Tokenizer,
            layout: Layout, paradigm_id: int | None, *, seq_len: int, val_fraction: float,
            seed: int, source: str = "the fine-tuning data") -> SFTData:
    """Tokenizes every conversation and splits them; ConfigError if a split has no example that
    fits `seq_len`."""
    examples = [sft_records.encode(c, tokenizer) for c in conversations]
    data = cls(examples, layout, paradigm_id, seq_len, *split(len(examples), val_fraction, seed))
    lengths = np.array([data.length(i) for i in range(len(examples))])
    too_long = lengths > seq_len
    if too_long.any():
      log_warning(f"{source}: {int(too_long.sum())} of {len(examples)} records are longer than "
                  f"train.seq_len={seq_len} and are left out (the longest: {lengths.max()} "
                  "positions)")
    train, val = data.train[~too_long[data.train]], data.val[~too_long[data.val]]
    for name, kept in (("training", train), ("validation", val)):
      if not len(kept):
        raise ConfigError(f"{source}: no {name} record fits train.seq_len={seq_len} (the "
                          f"longest is {lengths.max()} positions): raise train.seq_len")
    return dataclasses.replace(data, train=train, val=val)

  def length(self, index: int) -> int:
    """The positions example `index` takes in a row."""
    example = self.examples[index]
    return len(self.layout.inputs(example.prompt, self.paradigm_id)) + len(example.target)

  def segment(self, index: int) -> Row:
    """Example `index` laid out (1-D inputs, targets, loss_mask, prefix_mask)."""
    example = self.examples[index]
    return self.layout.segment(example.prompt, example.target, self.paradigm_id, example.scored)

  def pack(self, indices: Sequence[int]) -> Row:
    """One row holding the examples `indices` (they must fit), padded."""
    row = self.layout.pack([self.segment(int(i)) for i in indices], self.seq_len)
    if len(row["inputs"]) != 1:
      raise ValueError(f"examples {list(indices)} do not fit one row of {self.seq_len}")
    return {k: v[0] for k, v in row.items()}

  def rows(self, indices: Sequence[int]) -> list[list[int]]:
    """The rows (lists of example indices) that packing `indices` in order gives."""
    indices = np.asarray(indices)
    return [[int(indices[i]) for i in row]
            for row in plan_rows([self.length(int(i)) for i in indices], self.seq_len)]

  def train_dataset(self, *, batch_size: int, seed: int, process_index: int = 0,
                    process_count: int = 1) -> grain.IterDataset:
    """Endless batches of `batch_size` training rows for this process (see the docstring)."""
    order = self.train[np.random.default_rng([seed, 1]).permutation(len(self.train))]
    rows = self.rows(order)[process_index::process_count]
    if not rows:
      raise ConfigError(f"the training split packs into {len(self.rows(order))} rows, fewer than "
                        f"the {process_count} processes")
    return (grain.MapDataset.source(_Rows(self, rows)).shuffle(seed=seed).repeat(None)
            .batch(batch_size, drop_remainder=True).to_iter_dataset(_READ_OPTIONS))

  def validation_batches(self, *, batch_size: int, process_index: int = 0,
                         process_count: int = 1) -> list[Row]:
    """This process's `batch_size` rows of each global batch of the packed validation split."""
    rows = self.rows(self.val)
    width = batch_size * process_count
    rows += [[]] * (-len(rows) % width)  # empty rows: no target, no loss
    out = []
    for start in range(0, len(rows), width):
      mine = rows[start + process_index * batch_size:start + (process_index + 1) * batch_size]
      packed = [self.pack(r) if r else self._empty() for r in mine]
      out.append({k: np.stack([p[k] for p in packed]) for k in FEATURES})
    return out

  def _empty(self) -> Row:
    row = {name: np.zeros(self.seq_len, dtype) for name, dtype in FEATURES.items()}
    row["inputs"][:] = self.layout.pad_id
    return row


class _Rows:
  """A Grain source: row r packed on demand from its planned examples."""

  def __init__(self, data: SFTData, rows: list[list[int]]):
    self._data, self._rows = data, rows

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> Row:
    return self._data.pack(self._rows[index])
