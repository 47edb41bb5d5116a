"""Deshuffling at token level: X = the piece with a fraction of its tokens permuted, Y = the piece.

`round(pct * n)` positions are drawn without replacement and their tokens permuted among them, so
the requested fraction is really applied (the paper-era code never passed it on) and X holds
exactly the piece's tokens. Tokens are shuffled as ids, never as re-tokenised characters.
"""
from __future__ import annotations

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm


def deshuffling(tokens: np.ndarray, rng: np.random.Generator, *, pct: float,
                paradigm_id: int | None = None,
                append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = (tokens with `pct` of the positions shuffled, tokens)."""
  tokens = np.asarray(tokens, np.int32)
  n = len(tokens)
  if not n:
    return tokens[:0], tokens
  count = min(n, int(pct * n + 0.5))
  if count == n:
    shuffled = rng.permutation(tokens)
  else:
    positions = rng.choice(n, count, replace=False)
    shuffled = tokens.copy()
    shuffled[positions] = tokens[rng.permutation(positions)]
  return attach_paradigm(shuffled, paradigm_id, append_prob, rng), tokens
