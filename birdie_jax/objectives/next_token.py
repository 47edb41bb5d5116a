"""Next-token prediction: X holds only the paradigm token (if any), the targets Y are the piece.

Every objective shares the signature `(tokens, rng, **params) -> (X, Y)`: pure numpy over one
document piece's int32 ids, with all randomness drawn from the explicit `rng`. The packer lays
(X, Y) out as `X + [BEGIN] + Y[:-1]` with targets `[ignored] * len(X) + Y`. An empty piece gives
empty X and Y. `example_lengths(n, ...)` (here, or in `registry` for objectives that share one)
bounds the packed positions `len(X) + len(Y)` for pieces of `n` tokens, nondecreasing in `n`.
"""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm


def next_token_prediction(tokens: np.ndarray, rng: np.random.Generator, *,
                          paradigm_id: int | None = None,
                          append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = ([paradigm] or empty, tokens): the model reads `X + [BEGIN] + tokens[:-1]`.

  The target is never part of X, so after packing this stays a shifted language-model task (the
  public v2 code put the text in X too, turning it into copying).
  """
  tokens = np.asarray(tokens, np.int32)
  if not len(tokens):
    return tokens[:0], tokens
  return attach_paradigm(tokens[:0], paradigm_id, append_prob, rng), tokens


def example_lengths(n: np.ndarray, *, paradigm: bool) -> np.ndarray:
  """n + the paradigm token."""
  n = np.asarray(n, np.int64)
  return np.where(n > 0, n + int(paradigm), 0)
