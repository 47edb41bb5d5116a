"""Examples laid out as in training: rows for scoring and fine-tuning agree with the prompts that
decoding continues, in both layouts (property tests)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from birdie_jax.data.packing import DocumentPacker, FEATURES
from birdie_jax.evals.layout import Layout

BEGIN, PAD, PARADIGM = 4, 0, 7
ids = st.lists(st.integers(10, 99), max_size=12).map(lambda v: np.array(v, np.int32))
targets = st.lists(st.integers(10, 99), min_size=1, max_size=12).map(
    lambda v: np.array(v, np.int32))
kinds = st.sampled_from(["prefix", "continuation"])
paradigms = st.sampled_from([None, PARADIGM])


@given(kinds, paradigms, ids, targets)
def test_segment_targets_are_the_next_inputs_and_the_target_is_scored(kind, paradigm, x, y):
  layout = Layout(kind, begin_id=BEGIN, pad_id=PAD)
  seg = layout.segment(x, y, paradigm)
  start = layout.target_start(x, paradigm)
  n = len(seg["inputs"])
  assert {len(v) for v in seg.values()} == {n}
  np.testing.assert_array_equal(seg["targets"][start:], y)
  np.testing.assert_array_equal(seg["loss_mask"], np.arange(n) >= start)
  # Where the model predicts, its target is the next input (teacher forcing).
  predicted = np.arange(n - 1) >= (start if kind == "prefix" else 0)
  np.testing.assert_array_equal(seg["targets"][:-1][predicted], seg["inputs"][1:][predicted])
  if kind == "prefix":
    assert seg["inputs"][start] == BEGIN and seg["prefix_mask"].sum() == start
    assert (seg["inputs"][0] == PARADIGM) == (paradigm is not None)
  else:
    assert seg["inputs"][0] == BEGIN and not seg["prefix_mask"].any()
    assert PARADIGM not in seg["inputs"].tolist()


@given(kinds, paradigms, st.lists(st.tuples(ids, targets), min_size=1, max_size=4))
def test_generation_prompts_are_the_rows_up_to_the_first_prediction(kind, paradigm, pairs):
  layout = Layout(kind, begin_id=BEGIN, pad_id=PAD)
  batch = layout.prompts([x for x, _ in pairs], paradigm, length=40)
  assert batch["inputs"].shape == (len(pairs), 40)
  for row, (x, y) in enumerate(pairs):
    seg = layout.segment(x, y, paradigm)
    size = layout.target_start(x, paradigm) + 1  # the prompt ends where Y[0] is predicted
    for key in ("inputs", "prefix_mask"):
      np.testing.assert_array_equal(batch[key][row, -size:], seg[key][:size])
    assert not batch["segment_ids"][row, :-size].any()
    np.testing.assert_array_equal(batch["positions"][row, -size:], np.arange(size))


@settings(max_examples=50)
@given(kinds, st.lists(st.tuples(ids, targets), min_size=1, max_size=8),
       st.integers(30, 60), st.booleans())
def test_pack_keeps_every_segment_whole_and_in_order(kind, pairs, seq_len, one_per_row):
  layout = Layout(kind, begin_id=BEGIN, pad_id=PAD)
  segments = [layout.segment(x, y, PARADIGM) for x, y in pairs]
  batch = layout.pack(segments, seq_len, one_per_row=one_per_row)
  assert {k: v.dtype for k, v in batch.items()} == {k: np.dtype(v) for k, v in FEATURES.items()}
  found = []
  for row in range(len(batch["inputs"])):
    ids_ = batch["segment_ids"][row]
    assert not one_per_row or ids_.max() == 1
    for s in range(1, ids_.max() + 1):
      where = np.flatnonzero(ids_ == s)
      np.testing.assert_array_equal(batch["positions"][row, where], np.arange(len(where)))
      found.append({k: batch[k][row, where] for k in segments[0]})
    pad = ids_ == 0
    assert (batch["inputs"][row, pad] == PAD).all() and not batch["loss_mask"][row, pad].any()
  assert len(found) == len(segments)
  for a, b in zip(found, segments):
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])


def test_prefix_rows_match_the_training_packer():
  """A prefix-layout row is what the training packer makes of the same (X, Y) example."""
  x, y = np.array([11, 12, 13], np.int32), np.array([21, 22], np.int32)
  layout = Layout("prefix", begin_id=BEGIN, pad_id=PAD)
  row = layout.pack([layout.segment(x, y, PARADIGM)], 8)
  packer = DocumentPacker(8, begin_id=BEGIN, pad_id=PAD,
                          make_example=lambda t, rng: (np.concatenate([[PARADIGM], x]), y))
  packer.set_document(0, np.arange(5, dtype=np.int32))
  expected = packer.fill() or packer.flush()
  for key, value in expected.items():
    np.testing.assert_array_equal(row[key][0], value, err_msg=key)


def test_bad_layouts_and_lengths_are_refused():
  with pytest.raises(ValueError, match="layout"):
    Layout("both", begin_id=BEGIN, pad_id=PAD)
  layout = Layout("prefix", begin_id=BEGIN, pad_id=PAD)
  with pytest.raises(ValueError, match="does not fit"):
    layout.pack([layout.segment(np.arange(10, 20), np.arange(10, 15), None)], 8)
  with pytest.raises(ValueError, match="exceeds"):
    layout.prompts([np.arange(10, 20)], None, length=5)
