"""Paradigm tokens (paper A.7): one reserved id per objective class, prepended or appended to X.

UL2 always prepends its mode token; Birdie appends it half of the time instead. The id comes in as a
parameter (objectives never import the tokenizer); `None` means the objective carries no paradigm
token (the plain next-token baseline).
"""
from __future__ import annotations

import numpy as np

EMPTY = np.zeros(0, np.int32)


def attach_paradigm(x: np.ndarray, paradigm_id: int | None, append_prob: float,
                    rng: np.random.Generator) -> np.ndarray:
  """`x` with `paradigm_id` appended (probability `append_prob`) or prepended; `x` if None."""
  if paradigm_id is None:
    return x
  out = np.empty(len(x) + 1, np.int32)
  if rng.random() < append_prob:
    out[:-1], out[-1] = x, paradigm_id
  else:
    out[0], out[1:] = paradigm_id, x
  return out

