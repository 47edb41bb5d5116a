"""Information flow of every family: causality, Birdie's bidirectional prefix, packed documents.

One batch per (family, variant) holds the base row and its edits, so each model compiles once.
Document A spans columns 0..12 (prefix 0..4, BEGIN at 5), document B columns 13..23 (prefix 13..16).
"""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from models_helpers import FAMILIES, VOCAB, birdie_rows, tiny_model
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")

PREFIX_T, SUFFIX_T = 3, 9          # edited positions in document A
DOC_A, DOC_B = slice(0, 13), slice(13, 24)


@functools.cache
def _logits(family: str, bidirectional: bool) -> np.ndarray:
  rng = np.random.default_rng(0)
  base = birdie_rows(rng, 1, ((5, 13), (4, 11)))
  batch = {k: np.repeat(v, 5, axis=0) for k, v in base.items()}
  edits = batch["inputs"]
  edits[1, PREFIX_T] = (edits[1, PREFIX_T] + 1) % VOCAB
  edits[2, SUFFIX_T] = (edits[2, SUFFIX_T] + 1) % VOCAB
  edits[3, DOC_B] = rng.integers(1, VOCAB, 11)
  edits[4, DOC_A] = rng.integers(1, VOCAB, 13)
  graphdef, state = nnx.split(tiny_model(family, bidirectional))
  forward = jax.jit(lambda s, b: nnx.merge(graphdef, s)(
      b["inputs"], segment_ids=b["segment_ids"], positions=b["positions"],
      prefix_mask=b["prefix_mask"]))
  # One row per call, so every row meets the same matmul tiling: CPU kernels may round a row
  # differently by its place in a larger batch, which is not information flow.
  return np.concatenate([forward(state, {k: v[i:i + 1] for k, v in batch.items()})
                         for i in range(len(edits))])


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per position: whether the logits differ."""
  return np.abs(a - b).max(axis=-1) > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_models_never_look_ahead(family):
  out = _logits(family, False)
  for row, t in ((1, PREFIX_T), (2, SUFFIX_T)):
    np.testing.assert_array_equal(out[row, :t], out[0, :t])
    assert _changed(out[row, t:13], out[0, t:13]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_birdie_prefix_is_bidirectional_and_suffix_causal(family):
  out = _logits(family, True)
  # A prefix token reaches every earlier prefix position (and everything after it in its document).
  assert _changed(out[1, DOC_A], out[0, DOC_A]).all()
  # A suffix token reaches nothing before it.
  np.testing.assert_array_equal(out[2, :SUFFIX_T], out[0, :SUFFIX_T])
  assert _changed(out[2, SUFFIX_T:13], out[0, SUFFIX_T:13]).all()


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "birdie"])
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_documents_never_interact(family, bidirectional):
  out = _logits(family, bidirectional)
  np.testing.assert_array_equal(out[3, DOC_A], out[0, DOC_A])   # B rewritten: A unchanged
  np.testing.assert_array_equal(out[4, DOC_B], out[0, DOC_B])   # A rewritten: B unchanged
  assert _changed(out[3, DOC_B], out[0, DOC_B]).any()
