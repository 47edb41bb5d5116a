"""Prefix language modelling: X = the piece's first s tokens, Y = the rest (a random split).

As in the paper-era code, s is uniform in [n/2, n] with at least 4 tokens on each side; shorter
pieces keep at least one target token (a 1-token piece has an empty prefix).
"""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm

MIN_SIDE = 4  # tokens kept on each side of the split when the piece allows


def split_bounds(n: int) -> tuple[int, int]:
  """The smallest and largest prefix length for an n-token piece (n >= 1)."""
  side = min(MIN_SIDE, n // 2)
  return max(n // 2, side), n - max(side, 1)


def prefix_lm(tokens: np.ndarray, rng: np.random.Generator, *, paradigm_id: int | None = None,
              append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = ([paradigm] + tokens[:s] or tokens[:s] + [paradigm], tokens[s:])."""
  tokens = np.asarray(tokens, np.int32)
  if not len(tokens):
    return tokens[:0], tokens
  low, high = split_bounds(len(tokens))
  split = int(rng.integers(low, high + 1))
  return attach_paradigm(tokens[:split], paradigm_id, append_prob, rng), tokens[split:]
