"""The reward model: the paper's 4-layer Gated SSM over the history of (loss, action) rows.

Each input row is `[losses (n), action (n)]` for n configurations; the output at row t is the
predicted reward of every configuration for the interval that row's action was used, given rows
0..t (causal). The layout follows the original agent (`gated_ssm_agent.MLPModel`):

    split_norm(2n) -> Linear(2n -> H, no bias)
    L x GatedSSM(H, state 2H):  x' = split_norm(x)
                                (k, u, g_in, g_out) = x' W_gates   (one matmul; the agent's
                                K = sigmoid(k)                      W_K and W_ugg side by side)
                                u <- u * sigmoid(g_in) * (1 - K)
                                h_t = K_{t-1} * h_{t-1} + u_t     (the forget gate is one step late)
                                x <- x + (h * sigmoid(g_out)) W_out
    split_norm(H) -> Linear(H -> n, no bias)          (no output activation)

`split_norm` RMS-normalises the left and right halves separately (each with its own scale,
initialised to 1) and multiplies the result by a scale initialised to 0.1; on the input the halves
are the losses and the action. Linear layers start as PyTorch's (uniform in +-1/sqrt(fan_in)). The
recurrence runs through `ops.scan.linear_scan` in float32.

Params are a plain pytree (nested dicts), so they live in the controller state and train with Optax
inside one jitted loop. Scoring many candidate rows after the same history uses `history_carry`
once and `predict_next` per candidate: the model is causal, so this equals running each candidate
appended to the history, at the cost of one row per candidate.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from birdie_jax.ops.scan import linear_scan
from birdie_jax.ops.scan import ScanImpl

Params = dict[str, Any]
STATE_MULT = 2  # the Gated SSM's state width, in multiples of the hidden width
_NORM_SCALE = 0.1
_EPS = 1e-8
_TINY = 1e-30
# The history is short (tens of rows): a sequential scan beats the associative one there.
SCAN_IMPL = ScanImpl.LINEAR


def _linear(key: jax.Array, fan_in: int, fan_out: int) -> jax.Array:
  bound = fan_in**-0.5
  return jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound)


def _split_norm_params(width: int) -> Params:
  half = width // 2
  return {"left": jnp.ones(half, jnp.float32), "right": jnp.ones(width - half, jnp.float32),
          "scale": jnp.full(width, _NORM_SCALE, jnp.float32)}


def init_params(key: jax.Array, num_configs: int, *, hidden: int = 256, layers: int = 4) -> Params:
  """Fresh reward-model params for `num_configs` configurations."""
  state = STATE_MULT * hidden
  keys = jax.random.split(key, 2 + 2 * layers)
  blocks = [{"norm": _split_norm_params(hidden),
             "gates": _linear(keys[2 + 2 * i], hidden, 4 * state),
             "out": _linear(keys[3 + 2 * i], state, hidden)} for i in range(layers)]
  return {"embed": {"norm": _split_norm_params(2 * num_configs),
                    "kernel": _linear(keys[0], 2 * num_configs, hidden)},
          "blocks": blocks,
          "head": {"norm": _split_norm_params(hidden),
                   "kernel": _linear(keys[1], hidden, num_configs)}}


def _rms(x: jax.Array, scale: jax.Array) -> jax.Array:
  """`scale * x / (rms(x) + eps)`; the floor under the square root only keeps the gradient of an
  all-zero row (the history's padding) finite."""
  norm = jnp.sqrt(jnp.maximum(jnp.mean(jnp.square(x), axis=-1, keepdims=True), _TINY))
  return scale * x / (norm + _EPS)


def _split_norm(p: Params, x: jax.Array) -> jax.Array:
  """RMS-normalises the two halves of the last axis separately, then scales."""
  half = p["left"].shape[0]
  x = jnp.concatenate([_rms(x[..., :half], p["left"]), _rms(x[..., half:], p["right"])], axis=-1)
  return x * p["scale"]


def _gates(p: Params, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(forget gate K, drive u, output gate) of one block for inputs `x`."""
  x = _split_norm(p["norm"], x)
  forget, u, g_in, g_out = jnp.split(x @ p["gates"], 4, axis=-1)
  forget = jax.nn.sigmoid(forget)
  return forget, u * jax.nn.sigmoid(g_in) * (1.0 - forget), jax.nn.sigmoid(g_out)


def _embed(params: Params, rows: jax.Array) -> jax.Array:
  return _split_norm(params["embed"]["norm"], rows) @ params["embed"]["kernel"]


def _head(params: Params, x: jax.Array) -> jax.Array:
  return _split_norm(params["head"]["norm"], x) @ params["head"]["kernel"]


def apply_with_carries(params: Params, rows: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
  """(B, T, 2n) rows -> (B, T, n) predictions, and per block `K_t * h_t` as (B, T, state)."""
  x = _embed(params, rows)
  carries = []
  for block in params["blocks"]:
    forget, u, g_out = _gates(block, x)
    decay = jnp.concatenate([jnp.zeros_like(forget[:, :1]), forget[:, :-1]], axis=1)
    h, _ = linear_scan(decay, u, impl=SCAN_IMPL)
    x = x + (h * g_out) @ block["out"]
    carries.append(forget * h)
  return _head(params, x), carries


def apply(params: Params, rows: jax.Array) -> jax.Array:
  """(B, T, 2n) history rows -> (B, T, n) predicted rewards, causal along T."""
  return apply_with_carries(params, rows)[0]


def history_carry(params: Params, rows: jax.Array, count: jax.Array) -> list[jax.Array]:
  """Per block, `K * h` after the first `count` of the (T, 2n) `rows` (zeros if `count` is 0)."""
  _, carries = apply_with_carries(params, rows[None])
  last = jnp.maximum(count - 1, 0)
  return [jnp.where(count > 0, c[0, last], 0.0) for c in carries]


def predict_next(params: Params, carry: list[jax.Array], rows: jax.Array) -> jax.Array:
  """(B, 2n) candidate rows, each placed right after the history of `carry` -> (B, n) rewards."""
  x = _embed(params, rows)
  for block, block_carry in zip(params["blocks"], carry):
    _, u, g_out = _gates(block, x)
    x = x + ((block_carry + u) * g_out) @ block["out"]
  return _head(params, x)
