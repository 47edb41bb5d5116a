"""Random span layouts shared by infilling and autoencoding.

A piece of n tokens gets `m = round(rate * n)` masked tokens (at least one) in
`k = round(m / mean_span)` spans (at least one), so the mask rate is really applied and the mean
span length is m / k. Both counts depend on n alone, which lets the mixture size a piece exactly to
the room it has. Span lengths are T5's random segmentation of m into k positive parts; the spans are
placed uniformly with at least one unmasked token between two spans. k is capped so that each span
can have its own sentinel and the gaps fit (a rate and span length that cannot coexist in a short
piece give fewer, longer spans).
"""
from __future__ import annotations

import functools

import numpy as np


def span_counts(n: np.ndarray | int, rate: float, mean_span: float,
                max_spans: int) -> tuple[np.ndarray, np.ndarray]:
  """(masked tokens m, number of spans k) for pieces of `n` tokens (0 for empty pieces)."""
  n = np.asarray(n, np.int64)
  m = np.clip(np.floor(rate * n + 0.5).astype(np.int64), 1, n)
  k = np.floor(m / mean_span + 0.5).astype(np.int64)
  k = np.clip(k, 1, np.minimum(np.minimum(m, n - m + 1), max_spans))
  return m, k


@functools.lru_cache(maxsize=1 << 16)
def piece_span_counts(n: int, rate: float, mean_span: float, max_spans: int) -> tuple[int, int]:
  """`span_counts` of one piece length, as ints (cached: pieces repeat their lengths)."""
  m, k = span_counts(n, rate, mean_span, max_spans)
  return int(m), int(k)


def _positive_parts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random composition of `total` into `parts` positive integers."""
  if parts == 1:
    return np.array([total], np.int64)
  cuts = np.sort(rng.choice(total - 1, parts - 1, replace=False)) + 1
  return np.diff(np.concatenate(([0], cuts, [total])))


def _free_parts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
  """A random split of `total` into `parts` non-negative integers."""
  cuts = np.sort(rng.integers(0, total + 1, parts - 1))
  return np.diff(np.concatenate(([0], cuts, [total])))


def random_spans(n: int, m: int, k: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Starts and lengths (ascending) of k spans covering m of n positions, never touching."""
  lengths = _positive_parts(m, k, rng)
  gaps = _free_parts(n - m - (k - 1), k + 1, rng)
  gaps[1:-1] += 1
  starts = np.cumsum(gaps[:-1]) + np.cumsum(lengths) - lengths
  return starts, lengths


def span_mask(n: int, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Boolean mask of the n positions covered by the spans."""
  delta = np.zeros(n + 1, np.int32)
  delta[starts] = 1
  delta[starts + lengths] -= 1
  return np.cumsum(delta[:-1]) > 0
