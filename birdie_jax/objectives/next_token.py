"""Next-token prediction: no inputs X, the targets Y are the piece itself.

Every objective shares the signature `(tokens, rng, **params) -> (X, Y)`: pure numpy over one
document piece's int32 ids, with all randomness drawn from the explicit `rng`. The packer lays
(X, Y) out as `X + [BEGIN] + Y[:-1]` with targets `[ignored] * len(X) + Y`.
"""
from __future__ import annotations

import numpy as np


def next_token_prediction(tokens: np.ndarray,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = (empty, tokens): the model reads `[BEGIN] + tokens[:-1]` and predicts `tokens`."""
  del rng  # NTP draws nothing; the argument keeps the common objective signature.
  return np.zeros(0, np.int32), np.asarray(tokens, np.int32)
