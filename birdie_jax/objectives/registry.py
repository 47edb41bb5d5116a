"""The seven objective classes: their functions and the packed length of their examples.

`OBJECTIVES[name]` is the objective `(tokens, rng, **params) -> (X, Y)`; `example_lengths` gives,
for a configuration's parameters, an upper bound of `len(X) + len(Y)` for pieces of n tokens, which
the mixture inverts to size each piece to the room it has.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from birdie_jax.objectives import autoencoding
from birdie_jax.objectives import copying
from birdie_jax.objectives import deshuffling
from birdie_jax.objectives import infilling
from birdie_jax.objectives import next_token
from birdie_jax.objectives import prefix_lm
from birdie_jax.objectives import selective_copying

# An objective bound to its parameters and ids: (piece tokens, rng) -> (X, Y).
Objective = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

OBJECTIVES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "next_token_prediction": next_token.next_token_prediction,
    "prefix_lm": prefix_lm.prefix_lm,
    "selective_copying": selective_copying.selective_copying,
    "copying": copying.copying,
    "deshuffling": deshuffling.deshuffling,
    "infilling": infilling.infilling,
    "autoencoding": autoencoding.autoencoding,
}
SPAN_OBJECTIVES = ("infilling", "autoencoding")  # these take `sentinel_ids`
CLASSES = tuple(OBJECTIVES)


def example_lengths(objective: str, params: Mapping[str, Any], n: np.ndarray, *, paradigm: bool,
                    max_spans: int) -> np.ndarray:
  """Upper bound of the packed positions of `objective`'s examples for pieces of `n` tokens."""
  if objective in ("next_token_prediction", "prefix_lm"):
    return next_token.example_lengths(n, paradigm=paradigm)
  if objective in ("copying", "deshuffling"):
    return copying.example_lengths(n, paradigm=paradigm)
  if objective in SPAN_OBJECTIVES:
    module = infilling if objective == "infilling" else autoencoding
    return module.example_lengths(n, rate=params["rate"], mean_span=params["mean_span"],
                                  max_spans=max_spans, paradigm=paradigm)
  if objective == "selective_copying":
    return selective_copying.example_lengths(
        n, num_spans=params["num_spans"], span_range=params["span_range"],
        delimiter_range=params["delimiter_range"], paradigm=paradigm)
  raise ValueError(f"unknown objective {objective!r}")
