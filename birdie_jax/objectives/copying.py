"""Copying: X = the piece, Y = the same piece (the model reproduces its whole input)."""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm


def copying(tokens: np.ndarray, rng: np.random.Generator, *, paradigm_id: int | None = None,
            append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = (tokens with the paradigm token, tokens)."""
  tokens = np.asarray(tokens, np.int32)
  if not len(tokens):
    return tokens[:0], tokens
  return attach_paradigm(tokens, paradigm_id, append_prob, rng), tokens


def example_lengths(n: np.ndarray, *, paradigm: bool) -> np.ndarray:
  """2n + the paradigm token: a copy costs its length twice."""
  n = np.asarray(n, np.int64)
  return np.where(n > 0, 2 * n + int(paradigm), 0)
