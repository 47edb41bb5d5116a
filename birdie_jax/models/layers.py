"""Building blocks shared by the model families, each parameter annotated with its logical axis
names."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from birdie_jax.parallel.sharding import constrain

Names = tuple[str | None, ...]


def dense(in_features: int, out_features: int, names: Names, *, rngs: nnx.Rngs,
          dtype: jnp.dtype = jnp.float32, use_bias: bool = True, scale: float = 1.0) -> nnx.Linear:
  """A Linear layer (float32 master params, `dtype` compute) with logical names `(in, out)`."""
  kernel_init = nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nnx.with_partitioning(kernel_init, names),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (names[1],)), rngs=rngs)


class RMSNorm(nnx.Module):
  """RMS normalisation with a zero-initialised `(1 + scale)` gain, computed in float32."""

  def __init__(self, width: int, *, eps: float = 1e-6):
    self.scale = nnx.Param(jnp.zeros((width,), jnp.float32), out_sharding=("embed",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps) * (1.0 + self.scale[...])
    return y.astype(x.dtype)


EMBED_SCALES = ("sqrt_width", "sqrt_width_bf16", "none")  # `model.embed_scale`


class Embedder(nnx.Module):
  """Token embedding (std 1/sqrt(width)) tied to the output.

  `scale` (`model.embed_scale`) multiplies the embedding on the way in: 'sqrt_width' (ours) by
  sqrt(width) in float32; 'sqrt_width_bf16' by sqrt(width) rounded to bfloat16, as RecurrentGemma's
  2B/9B do ("to match training"; 2560 -> 50.5, not 50.596); 'none' leaves it (the Griffin
  paper's 7B models). `soft_cap` (`model.logits_soft_cap`, 0: off) bounds the logits to
  (-c, c) with c * tanh(logits / c), RecurrentGemma's final soft cap (30 for its 2B/9B).
  """

  def __init__(self, vocab_size: int, width: int, *, rngs: nnx.Rngs, dtype: jnp.dtype,
               scale: str = "sqrt_width", soft_cap: float = 0.0):
    if scale not in EMBED_SCALES:
      raise ValueError(f"embed scale must be one of {EMBED_SCALES}, got {scale!r}")
    init = nnx.initializers.normal(stddev=width**-0.5)
    self.table = nnx.Param(init(rngs.params(), (vocab_size, width), jnp.float32),
                           out_sharding=("vocab", "embed"))
    self.width = width
    self.dtype = dtype
    self.scale = scale
    self.soft_cap = float(soft_cap)

  def encode(self, tokens: jax.Array) -> jax.Array:
    x = jnp.take(self.table[...], tokens, axis=0)
    if self.scale == "sqrt_width":
      x = x * jnp.sqrt(float(self.width))
    elif self.scale == "sqrt_width_bf16":  # their float32 sqrt(width), rounded to bfloat16
      x = x * float(ml_dtypes.bfloat16(np.float32(math.sqrt(self.width))))
    return constrain(x.astype(self.dtype), ("batch", "length", "act_embed"))

  def decode(self, x: jax.Array) -> jax.Array:
    """Logits in float32 (the matmul runs in the compute dtype, accumulating in float32),
    soft-capped when `soft_cap` > 0."""
    logits = jnp.einsum("bld,vd->blv", x, self.table[...].astype(self.dtype),
                        preferred_element_type=jnp.float32)
    if self.soft_cap > 0:
      logits = self.soft_cap * jnp.tanh(logits / self.soft_cap)
    return constrain(logits, ("batch", "length", "vocab"))


class MLP(nnx.Module):
  """Gated GeLU MLP: down(gelu(gate(x)) * up(x))."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs, dtype: jnp.dtype):
    self.gate = dense(width, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.up = dense(width, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.down = dense(hidden, width, ("mlp", "embed"), rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.gelu(self.gate(x)) * self.up(x)
    h = constrain(h, ("batch", "length", "mlp"))
    return constrain(self.down(h), ("batch", "length", "act_embed"))


class BlockDiagonalLinear(nnx.Module):
  """A linear map with `num_heads` independent square blocks (RecurrentGemma's gate layers)."""

  def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, dtype: jnp.dtype):
    block = width // num_heads
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                             in_axis=1, out_axis=2, batch_axis=(0,))
    self.w = nnx.Param(init(rngs.params(), (num_heads, block, block), jnp.float32),
                       out_sharding=("heads", None, None))
    self.b = nnx.Param(jnp.zeros((num_heads, block), jnp.float32), out_sharding=("heads", None))
    self.num_heads = num_heads
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    *lead, width = x.shape
    xh = x.reshape(*lead, self.num_heads, width // self.num_heads)
    y = jnp.einsum("...hi,hij->...hj", xh, self.w[...].astype(self.dtype)) + self.b[...]
    return y.reshape(*lead, width).astype(self.dtype)


def same_segment_shifted(segment_ids: jax.Array, shift: int) -> jax.Array:
  """True where position t and t - shift lie in the same (non-padding) document."""
  if shift == 0:
    return segment_ids > 0
  shifted = jnp.pad(segment_ids, ((0, 0), (shift, 0)))[:, :segment_ids.shape[1]]
  return (shifted == segment_ids) & (segment_ids > 0)


class Conv1D(nnx.Module):
  """Causal depthwise temporal convolution whose window never crosses a document boundary.

  With the length split over a `sequence` mesh axis, each shard needs the last `taps - 1` inputs
  (and segment ids) of the shard before it: GSPMD partitions the shifted reads into that halo
  exchange (collective-permutes of 1 .. taps - 1 positions to the next shard), nothing more.
  """

  def __init__(self, width: int, taps: int, *, rngs: nnx.Rngs, dtype: jnp.dtype):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0,
                                             out_axis=1)
    self.w = nnx.Param(init(rngs.params(), (taps, width), jnp.float32),
                       out_sharding=("conv", "lru"))
    self.b = nnx.Param(jnp.zeros((width,), jnp.float32), out_sharding=("lru",))
    self.taps = taps
    self.dtype = dtype

  def __call__(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """x: (B, L, D); tap k reads x[t - k] when it lies in t's document."""
    w = self.w[...].astype(self.dtype)
    length = x.shape[1]
    out = jnp.zeros_like(x) + self.b[...].astype(self.dtype)
    for k in range(self.taps):
      shifted = jnp.pad(x, ((0, 0), (k, 0), (0, 0)))[:, :length]
      keep = same_segment_shifted(segment_ids, k)[..., None]
      out = out + jnp.where(keep, shifted, 0) * w[k]
    return out

  def final_state(self, x: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """The decoding state after a (left-padded) prompt: its last `taps - 1` inputs (B, taps-1, D),
    zeroed where they lie outside the last position's document."""
    keep = (segment_ids == segment_ids[:, -1:]) & (segment_ids > 0)
    x = jnp.where(keep[..., None], x, 0)
    pad = max(self.taps - 1 - x.shape[1], 0)
    x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0)))
    return x[:, x.shape[1] - (self.taps - 1):]

  def step(self, x: jax.Array, state: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token (B, 1, D) continuing its document -> (output (B, 1, D), new state)."""
    w = self.w[...].astype(self.dtype)
    window = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # oldest first
    out = jnp.einsum("btd,td->bd", window, w[::-1])[:, None] + self.b[...].astype(self.dtype)
    return out.astype(x.dtype), window[:, 1:]


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def as_dtype(name: str) -> jnp.dtype:
  """'float32' | 'bfloat16' -> the jnp dtype."""
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]

