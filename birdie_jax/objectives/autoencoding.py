"""Autoencoding: X = the piece with spans masked and a token dropped after each; Y = the piece.

Masking follows `spans`; each span becomes its own sentinel in X and the token right after it is
dropped without a trace (as in the paper-era `run_ssm_span_corruption`). With `shuffle`, X is cut at
its sentinels into pieces (the text before the first sentinel, then each sentinel with the text that
follows it) and the pieces are put in a random order; no token is lost (the paper-era code dropped
the tail, the public v2 code never shuffled).
"""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm
from birdie_jax.objectives.spans import piece_span_counts
from birdie_jax.objectives.spans import random_spans
from birdie_jax.objectives.spans import span_counts
from birdie_jax.objectives.spans import span_mask


def shuffle_pieces(x: np.ndarray, cuts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`x` cut before each index in `cuts` (ascending, > 0), with the pieces in a random order."""
  starts = np.concatenate([[0], cuts])
  lengths = np.diff(starts, append=len(x))
  order = rng.permutation(len(starts))
  starts, lengths = starts[order], lengths[order]
  offsets = np.cumsum(lengths) - lengths
  return x[np.repeat(starts - offsets, lengths) + np.arange(len(x))]


def autoencoding(tokens: np.ndarray, rng: np.random.Generator, *, rate: float, mean_span: float,
                 shuffle: bool, sentinel_ids: np.ndarray, paradigm_id: int | None = None,
                 append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = (corrupted and optionally piece-shuffled tokens, tokens)."""
  tokens = np.asarray(tokens, np.int32)
  n = len(tokens)
  if not n:
    return tokens[:0], tokens
  m, k = piece_span_counts(n, rate, mean_span, len(sentinel_ids))
  starts, lengths = random_spans(n, m, k, rng)
  ends = starts + lengths
  keep = ~span_mask(n, starts, lengths)
  keep[ends[ends < n]] = False
  keep[starts] = True
  x = tokens.copy()
  x[starts] = sentinel_ids[:k]
  x = x[keep]
  if shuffle:
    where = np.cumsum(keep)[starts] - 1  # the sentinels' positions in x
    x = shuffle_pieces(x, where[where > 0], rng)
  return attach_paradigm(x, paradigm_id, append_prob, rng), tokens


def example_lengths(n: np.ndarray, *, rate: float, mean_span: float, max_spans: int,
                    paradigm: bool) -> np.ndarray:
  """At most 2n - m + 1 + the paradigm token (every span but the last drops a token)."""
  n = np.asarray(n, np.int64)
  m, _ = span_counts(n, rate, mean_span, max_spans)
  return np.where(n > 0, 2 * n - m + 1 + int(paradigm), 0)
