"""Packing: the universal layout, no lost or duplicated token, and the masks, on random docs."""
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from birdie_jax.data import packing
from birdie_jax.errors import ConfigError
from birdie_jax.objectives.next_token import next_token_prediction

PAD, BEGIN, GAP = 0, 4, 118
LOW, HIGH = 200, 260  # document token ids


@st.composite
def corpora(draw, min_seq_len=1):
  """(documents, seq_len, gap): documents of every length from 0 to several times seq_len."""
  seq_len = draw(st.integers(min_seq_len, 24))
  lengths = draw(st.lists(st.integers(0, 4 * seq_len + 1), max_size=12))
  seed = draw(st.integers(0, 2**31))
  rng = np.random.default_rng(seed)
  documents = [rng.integers(LOW, HIGH, n).astype(np.int32) for n in lengths]
  return documents, seq_len, draw(st.integers(0, 3))


def prefix_split(tokens, rng):
  """A toy objective with a prefix: X = the first half, Y = the rest."""
  del rng
  half = len(tokens) // 2
  return tokens[:half], tokens[half:]


class CopyPlanner:
  """Copying with a random piece length: examples twice as long as their pieces, so some do not fit
  the row's room and move to a new row."""

  def plan(self, rng, room, seq_len):
    del room
    return int(rng.integers(1, seq_len // 2 + 1)), lambda tokens, rng: (tokens, tokens)


def pack(documents, seq_len, gap, make_example=next_token_prediction, seed=0):
  return packing.pack_documents(documents, seq_len=seq_len, begin_id=BEGIN, pad_id=PAD, gap=gap,
                                gap_id=GAP, make_example=make_example, seed=seed)


def segments(batch):
  """Every example as a dict of its arrays, row by row, segment by segment, and checks the
  bookkeeping of segment ids, positions, gaps and padding on the way."""
  examples = []
  rows, seq_len = batch["segment_ids"].shape
  for r in range(rows):
    seg = batch["segment_ids"][r]
    outside = seg == 0
    assert np.all(batch["targets"][r][outside] == 0)
    assert np.all(batch["loss_mask"][r][outside] == 0)
    assert not np.any(batch["prefix_mask"][r][outside])
    assert np.all(batch["positions"][r][outside] == 0)
    assert np.all(np.isin(batch["inputs"][r][outside], [PAD, GAP]))
    ids = seg[~outside]
    assert np.all(np.diff(ids) >= 0) and (not len(ids) or ids[0] == 1)
    assert np.array_equal(np.unique(ids), np.arange(1, ids.max() + 1) if len(ids) else [])
    for k in np.unique(ids):
      where = np.flatnonzero(seg == k)
      assert np.array_equal(where, np.arange(where[0], where[-1] + 1)), "segment not contiguous"
      assert np.array_equal(batch["positions"][r][where], np.arange(len(where)))
      examples.append({name: array[r][where] for name, array in batch.items()})
  return examples


def check_common(batch, stats, seq_len, gap):
  assert {k: (v.dtype, v.shape[1]) for k, v in batch.items()} == {
      k: (np.dtype(d), seq_len) for k, d in packing.FEATURES.items()}
  assert np.all((batch["inputs"] >= 0) & (batch["inputs"] < HIGH))
  assert np.all((batch["targets"] >= 0) & (batch["targets"] < HIGH))
  assert stats.rows == len(batch["inputs"])
  assert stats.padding_fraction == pytest.approx(
      packing.padding_fraction(batch) if stats.rows else 0.0)
  for r in range(stats.rows):  # gaps: exactly `gap` spacer tokens between examples, none after
    seg, inputs = batch["segment_ids"][r], batch["inputs"][r]
    last = np.flatnonzero(seg)[-1]
    starts = np.flatnonzero(np.diff(seg[:last + 1]) > 0) + 1
    for s in starts:
      assert np.all(inputs[s - gap:s] == GAP) and np.all(seg[s - gap:s] == 0)
    assert np.all(inputs[last + 1:] == PAD)


@settings(max_examples=150, deadline=None)
@given(corpora())
def test_next_token_rows(corpus):
  documents, seq_len, gap = corpus
  batch, stats = pack(documents, seq_len, gap)
  check_common(batch, stats, seq_len, gap)
  examples = segments(batch)
  for ex in examples:  # [BEGIN] + piece[:-1] -> piece; every target counts; no prefix
    assert ex["inputs"][0] == BEGIN
    assert np.array_equal(ex["inputs"][1:], ex["targets"][:-1])
    assert np.all(ex["loss_mask"] == 1) and not np.any(ex["prefix_mask"])
  pieces = [ex["targets"] for ex in examples]
  expected = [d for d in documents if len(d)]
  assert np.array_equal(np.concatenate(pieces or [np.zeros(0, np.int32)]),
                        np.concatenate(expected or [np.zeros(0, np.int32)]))
  assert all(len(p) <= seq_len for p in pieces)
  assert stats.tokens == sum(map(len, expected))
  if gap == 0 and stats.rows:  # greedy: only the last row is padded
    assert np.all(batch["segment_ids"][:-1] > 0)


@settings(max_examples=100, deadline=None)
@given(corpora())
def test_prefix_layout(corpus):
  documents, seq_len, gap = corpus
  batch, stats = pack(documents, seq_len, gap, make_example=prefix_split)
  check_common(batch, stats, seq_len, gap)
  restored = []
  for ex in segments(batch):
    n_x = int(ex["prefix_mask"].sum())
    x, y = ex["inputs"][:n_x], ex["targets"][n_x:]
    assert np.all(ex["prefix_mask"][:n_x]) and not np.any(ex["prefix_mask"][n_x:])
    assert np.array_equal(ex["loss_mask"], np.arange(len(ex["inputs"])) >= n_x)
    assert np.all(ex["targets"][:n_x] == 0)
    assert np.array_equal(ex["inputs"], np.concatenate([x, [BEGIN], y[:-1]]))
    restored.append(np.concatenate([x, y]))
  expected = [d for d in documents if len(d)]
  assert np.array_equal(np.concatenate(restored or [np.zeros(0)]),
                        np.concatenate(expected or [np.zeros(0)]))


@settings(max_examples=100, deadline=None)
@given(corpora(min_seq_len=2))
def test_planner_moves_examples_that_do_not_fit(corpus):
  documents, seq_len, gap = corpus
  batch, stats = pack(documents, seq_len, gap, make_example=CopyPlanner())
  check_common(batch, stats, seq_len, gap)
  copied = []
  for ex in segments(batch):
    n_x = int(ex["prefix_mask"].sum())
    assert np.array_equal(ex["inputs"][:n_x], ex["targets"][n_x:])
    copied.append(ex["targets"][n_x:])
  expected = [d for d in documents if len(d)]
  assert np.array_equal(np.concatenate(copied or [np.zeros(0)]),
                        np.concatenate(expected or [np.zeros(0)]))
  again, _ = pack(documents, seq_len, gap, make_example=CopyPlanner())
  assert all(np.array_equal(batch[k], again[k]) for k in batch)


def test_paper_example():
  batch, stats = pack([np.array([4, 5, 6, 7, 8, 9]) + 200], seq_len=8, gap=0,
                      make_example=lambda t, rng: (t[:3], t[3:]))
  assert batch["inputs"].tolist() == [[204, 205, 206, BEGIN, 207, 208, PAD, PAD]]
  assert batch["targets"].tolist() == [[0, 0, 0, 207, 208, 209, 0, 0]]
  assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 0, 0]]
  assert batch["prefix_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
  assert batch["positions"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 0]]
  assert batch["segment_ids"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]]
  assert stats.padding_fraction == 0.25


def test_ntp_with_gap():
  batch, _ = pack([np.array([201, 202]), np.array([203, 204, 205, 206, 207])], seq_len=6, gap=1)
  assert batch["inputs"].tolist() == [[BEGIN, 201, GAP, BEGIN, 203, 204],
                                      [BEGIN, 206, PAD, PAD, PAD, PAD]]
  assert batch["segment_ids"].tolist() == [[1, 1, 0, 2, 2, 2], [1, 1, 0, 0, 0, 0]]
  assert batch["targets"].tolist() == [[201, 202, 0, 203, 204, 205], [206, 207, 0, 0, 0, 0]]
  assert batch["positions"].tolist() == [[0, 1, 0, 0, 1, 2], [0, 1, 0, 0, 0, 0]]


def test_piece_randomness_is_seeded_per_piece():
  documents = [np.arange(200, 250), np.arange(200, 230)]
  first, _ = pack(documents, 16, 0, make_example=CopyPlanner(), seed=1)
  same, _ = pack(documents, 16, 0, make_example=CopyPlanner(), seed=1)
  other, _ = pack(documents, 16, 0, make_example=CopyPlanner(), seed=2)
  assert np.array_equal(first["segment_ids"], same["segment_ids"])
  assert not np.array_equal(first["segment_ids"], other["segment_ids"])


def test_bad_objectives_and_sizes_raise():
  with pytest.raises(ValueError, match="longer than seq_len"):
    pack([np.arange(200, 210)], 4, 0, make_example=lambda t, rng: (t, t))
  with pytest.raises(ValueError, match="no targets"):
    pack([np.arange(200, 210)], 4, 0, make_example=lambda t, rng: (t, t[:0]))
  with pytest.raises(ConfigError):
    pack([np.arange(200, 210)], 0, 0)
