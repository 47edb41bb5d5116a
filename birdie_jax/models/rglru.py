"""The Real-Gated Linear Recurrent Unit (Griffin/Hawk), with document resets and Birdie's
bidirectional-prefix split.

    r_t = sigmoid(W_a x_t),  i_t = sigmoid(W_x x_t)
    log a_t = -c * r_t * softplus(Lambda),  c = 8
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

Where no state flows in (a document's start; in a bidirectional layer's reverse half, everywhere
outside the prefix and at a document's end; see `recurrence`) `a_t = 0` and the input is not
rescaled.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax.models.layers import BlockDiagonalLinear
from birdie_jax.models.recurrence import decay_keep, split_scan, split_step

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

  @property
  def state_width(self) -> int:
    """Width of the decoding state: the forward channels only."""
    return self.width // 2 if self.bidirectional else self.width

  def _decay_and_drive(self, x: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 decay `a` and drive `sqrt(1 - a^2) * i * x` (unscaled where `keep` is False)."""
    gate_x = jax.nn.sigmoid(self.input_gate(x))
    gate_a = jax.nn.sigmoid(self.a_gate(x)).astype(jnp.float32)
    log_a = -_C * gate_a * jax.nn.softplus(self.a_param[...])
    a = jnp.where(keep, jnp.exp(log_a), 0.0)
    scale = jnp.where(keep, sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a), 1000.0), 1.0)
    drive = (x * gate_x).astype(jnp.float32) * scale
    return a, drive.astype(x.dtype)

  def __call__(self, x: jax.Array, segment_ids: jax.Array,
               prefix_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """x: (B, L, W) in the compute dtype -> (y in the same dtype, float32 forward state at L-1)."""
    keep = decay_keep(segment_ids, prefix_mask, self.width, self.bidirectional)
    a, drive = self._decay_and_drive(x, keep)
    return split_scan(a, drive, bidirectional=self.bidirectional, impl=self.scan_impl)

  def step(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token (B, 1, W) continuing its document from forward state `h` -> (y, new state)."""
    keep = jnp.arange(self.width) < self.state_width
    a, drive = self._decay_and_drive(x, keep)
    return split_step(a, drive, h, bidirectional=self.bidirectional)
