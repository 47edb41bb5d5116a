"""The Real-Gated Linear Recurrent Unit (Griffin/Hawk), with document resets and Birdie's
bidirectional-prefix split.

    r_t = sigmoid(W_a x_t),  i_t = sigmoid(W_x x_t)
    log a_t = -c * r_t * softplus(Lambda),  c = 8
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

Where a document starts (no incoming state) `a_t = 0` and the input is not rescaled. In a
bidirectional layer the first half of the channels scans forward over the whole packed row and the
second half scans right to left with its decay zeroed outside the prefix and at document ends, so
every prefix position sees the whole prefix while the suffix stays strictly causal.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax.models.layers import BlockDiagonalLinear
from birdie_jax.ops.scan import linear_scan

_C = 8.0


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: jax.Array, max_gradient: float) -> jax.Array:
  """sqrt(x) whose derivative is capped at `max_gradient` (RecurrentGemma's NaN guard near x=0)."""
  return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_derivative_jvp(max_gradient, primals, tangents):
  (x,), (dx,) = primals, tangents
  floor = 1.0 / (4.0 * max_gradient**2)
  return jnp.sqrt(x), dx * 0.5 * jax.lax.rsqrt(jnp.maximum(x, floor))


def a_param_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32,
                 min_rad: float = 0.9, max_rad: float = 0.999) -> jax.Array:
  """RecurrentGemma's init: a = exp(-softplus(Lambda)) with a^2 uniform in [min_rad^2, max_rad^2].

  Returns Lambda = softplus^-1(-log a).
  """
  unif = jax.random.uniform(key, shape, jnp.float32)
  a_sq = unif * (max_rad**2 - min_rad**2) + min_rad**2
  neg_log_a = -0.5 * jnp.log(a_sq)
  return jnp.log(jnp.expm1(neg_log_a)).astype(dtype)


def forward_decay_mask(segment_ids: jax.Array) -> jax.Array:
  """True where the forward state may flow in from t-1 (same non-padding document)."""
  prev = jnp.pad(segment_ids, ((0, 0), (1, 0)))[:, :-1]
  return (prev == segment_ids) & (segment_ids > 0)


def reverse_decay_mask(segment_ids: jax.Array, prefix_mask: jax.Array) -> jax.Array:
  """True where the reverse state may flow in from t+1: t in the prefix, t+1 in t's document."""
  nxt = jnp.pad(segment_ids, ((0, 0), (0, 1)))[:, 1:]
  return prefix_mask & (nxt == segment_ids) & (segment_ids > 0)


class RGLRU(nnx.Module):
  """RG-LRU over (batch, length, lru_width) inputs; `bidirectional` splits the channels in half."""

  def __init__(self, width: int, num_heads: int, *, bidirectional: bool, rngs: nnx.Rngs,
               dtype: jnp.dtype, scan_impl: str = "auto"):
    if bidirectional and width % 2:
      raise ValueError(f"a bidirectional RG-LRU needs an even width, got {width}")
    self.input_gate = BlockDiagonalLinear(width, num_heads, rngs=rngs, dtype=dtype)
    self.a_gate = BlockDiagonalLinear(width, num_heads, rngs=rngs, dtype=dtype)
    self.a_param = nnx.Param(a_param_init(rngs.params(), (width,)), out_sharding=("lru",))
    self.bidirectional = bidirectional
    self.width = width
    self.scan_impl = scan_impl

  def __call__(self, x: jax.Array, segment_ids: jax.Array,
               prefix_mask: jax.Array | None = None) -> jax.Array:
    """x: (B, L, W) in the compute dtype -> (B, L, W) in the same dtype."""
    gate_x = jax.nn.sigmoid(self.input_gate(x))
    gate_a = jax.nn.sigmoid(self.a_gate(x)).astype(jnp.float32)
    log_a = -_C * gate_a * jax.nn.softplus(self.a_param[...])
    keep = forward_decay_mask(segment_ids)
    if self.bidirectional:
      if prefix_mask is None:
        raise ValueError("a bidirectional RG-LRU needs the batch's prefix_mask")
      keep_rev = reverse_decay_mask(segment_ids, prefix_mask.astype(bool))
      half = self.width // 2
      keep = jnp.concatenate([jnp.broadcast_to(keep[..., None], (*keep.shape, half)),
                              jnp.broadcast_to(keep_rev[..., None], (*keep.shape, half))], -1)
    else:
      keep = keep[..., None]
    a = jnp.where(keep, jnp.exp(log_a), 0.0)
    scale = jnp.where(keep, sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a), 1000.0), 1.0)
    drive = (x * gate_x).astype(jnp.float32) * scale
    drive = drive.astype(x.dtype)
    if not self.bidirectional:
      y, _ = linear_scan(a, drive, impl=self.scan_impl)
      return y
    half = self.width // 2
    y_fwd, _ = linear_scan(a[..., :half], drive[..., :half], impl=self.scan_impl)
    y_rev, _ = linear_scan(a[..., half:], drive[..., half:], reverse=True, impl=self.scan_impl)
    return jnp.concatenate([y_fwd, y_rev], axis=-1)

