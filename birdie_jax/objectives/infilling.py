"""Infilling (span corruption): spans become sentinels in X; Y lists each span, then its sentinel.

Table 1's layout: input `songs [S0] the [S1]`, target `fill [S0] air [S1]`, with span i marked by
the i-th sentinel, so sentinels never repeat within an example (the paper-era code drew them at
random with replacement). Masking follows `spans` (rate really applied, mean span as configured).
"""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm
from birdie_jax.objectives.spans import piece_span_counts
from birdie_jax.objectives.spans import random_spans
from birdie_jax.objectives.spans import span_counts
from birdie_jax.objectives.spans import span_mask


def infilling(tokens: np.ndarray, rng: np.random.Generator, *, rate: float, mean_span: float,
              sentinel_ids: np.ndarray, paradigm_id: int | None = None,
              append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y): X = tokens with span i replaced by sentinel i; Y = span_0 S_0 span_1 S_1 ..."""
  tokens = np.asarray(tokens, np.int32)
  n = len(tokens)
  if not n:
    return tokens[:0], tokens
  m, k = piece_span_counts(n, rate, mean_span, len(sentinel_ids))
  starts, lengths = random_spans(n, m, k, rng)
  masked = span_mask(n, starts, lengths)
  sentinels = sentinel_ids[:k]
  keep = ~masked
  keep[starts] = True
  x = tokens.copy()
  x[starts] = sentinels
  y = np.empty(m + k, np.int32)
  is_sentinel = np.zeros(m + k, bool)
  is_sentinel[np.cumsum(lengths) + np.arange(k)] = True
  y[is_sentinel] = sentinels
  y[~is_sentinel] = tokens[masked]
  return attach_paradigm(x[keep], paradigm_id, append_prob, rng), y


def example_lengths(n: np.ndarray, *, rate: float, mean_span: float, max_spans: int,
                    paradigm: bool) -> np.ndarray:
  """Exactly n + 2k + the paradigm token (each span adds its sentinel to X and to Y)."""
  n = np.asarray(n, np.int64)
  _, k = span_counts(n, rate, mean_span, max_spans)
  return np.where(n > 0, n + 2 * k + int(paradigm), 0)
