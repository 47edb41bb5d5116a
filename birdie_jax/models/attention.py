"""Multi-head / grouped-query / multi-query attention with RoPE, segment masks and a KV cache.

Queries attend within their own document (segment), causally; in a prefix-LM layer (Birdie) prefix
positions also attend to later prefix positions of their document:
    mask = ((prefix[q] & prefix[kv]) | q >= kv) & same_segment   (& |q - kv| < window if local).
RoPE uses the per-document `positions`, so packed documents all start at position 0.

The decoding cache is a ring buffer of `R` slots (the window for local attention, else the whole
prompt + generation length); token `t` of the row lives in slot `t % R`, with a validity bit that
excludes padding, other documents and slots not yet written.

With the length split over a `sequence` mesh axis, the queries, outputs and the (L, L) mask stay
split by query position and GSPMD gathers the keys and values of the whole row to every shard:
simple, but the gathered K/V and each shard's (L / S, L) scores grow with the full length (also
for Griffin's local attention, which would need only a window of keys). A ring-attention schedule
would keep them per shard.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from birdie_jax.models.blocks import (Cache, ResidualBlock, RingWrite, Segments, StepInfo,
                                      update_cache)
from birdie_jax.models.layers import MLP, as_dtype
from birdie_jax.models.lm import mlp_hidden, mlp_params
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.models.remat import ATTENTION_OUTPUT
from birdie_jax.parallel.sharding import constrain


def resolve_implementation(name: str, dtype: jnp.dtype, head_dim: int) -> str | None:
  """`jax.nn.dot_product_attention`'s implementation for `model.attention_impl`.

  'auto' picks cuDNN's fused attention on GPU where it applies (bf16/fp16, head_dim a multiple of
  8 up to 128): JAX's own default (jax 0.10-0.11) is XLA, which took 2.1x as long as cuDNN for a
  bf16 Transformer train step on an H100 (B8 x L2048, width 256). Elsewhere JAX chooses.
  """
  if name != "auto":
    return name
  fused = (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
           and head_dim % 8 == 0 and head_dim <= 128)
  return "cudnn" if fused else None


def rope(x: jax.Array, positions: jax.Array, base: float, dims: int | None = None) -> jax.Array:
  """Rotary embedding of (B, L, N, H) `x` at (B, L) `positions` (computed in float32).

  `dims` < H rotates only the first `dims` of each head's H dims (as if they were the head) and
  passes the rest through: RecurrentGemma rotates half of each head (`model.rope_fraction` 0.5).
  """
  if dims is not None and dims < x.shape[-1]:
    return jnp.concatenate([rope(x[..., :dims], positions, base), x[..., dims:]], axis=-1)
  half = x.shape[-1] // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[..., None, None] * inv_freq
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attention_mask(segment_ids: jax.Array, prefix_mask: jax.Array, *, prefix_lm: bool,
                   window: int) -> jax.Array:
  """(B, 1, L, L) boolean mask: same document, causal (or prefix-LM), within `window` if > 0."""
  length = segment_ids.shape[1]
  q = jnp.arange(length)[:, None]
  kv = jnp.arange(length)[None, :]
  allowed = (q >= kv)[None]
  if prefix_lm:
    prefix = prefix_mask.astype(bool)
    allowed = allowed | (prefix[:, :, None] & prefix[:, None, :])
  if window:
    allowed = allowed & (jnp.abs(q - kv) < window)[None]
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (allowed & same)[:, None]


def rope_dims(head_dim: int, fraction: float) -> int:
  """How many of a head's dims RoPE rotates: round(fraction * head_dim)."""
  return int(round(fraction * head_dim))


def _to_ring(x: jax.Array, slots: int) -> jax.Array:
  """Columns L - slots .. L - 1 of (B, L, ...) `x` (zeros before column 0), each at column %
  slots."""
  length = x.shape[1]
  pad = max(slots - length, 0)
  x = jnp.pad(x, ((0, 0), (pad, 0)) + ((0, 0),) * (x.ndim - 2))[:, -slots:]
  return jnp.roll(x, length % slots, axis=1)


class Attention(nnx.Module):
  """Attention with `num_heads` query heads sharing `num_kv_heads` key/value heads."""

  def __init__(self, width: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               rngs: nnx.Rngs, dtype: jnp.dtype, prefix_lm: bool, window: int = 0,
               rope_base: float = 250_000.0, rope_fraction: float = 1.0, impl: str = "auto"):
    def param(shape, names, in_axis, out_axis):
      init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                               in_axis=in_axis, out_axis=out_axis)
      return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=names)

    self.q = param((width, num_heads, head_dim), ("embed", "heads", "head_dim"), 0, (1, 2))
    self.k = param((width, num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), 0, (1, 2))
    self.v = param((width, num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), 0, (1, 2))
    self.o = param((num_heads, head_dim, width), ("heads", "head_dim", "embed"), (0, 1), 2)
    self.o_bias = nnx.Param(jnp.zeros((width,), jnp.float32), out_sharding=("embed",))
    self.dtype = dtype
    self.prefix_lm = prefix_lm
    self.window = window
    self.rope_base = rope_base
    self.rope_dims = rope_dims(head_dim, rope_fraction)
    self.impl = resolve_implementation(impl, dtype, head_dim)

  @staticmethod
  def param_count(width: int, num_heads: int, num_kv_heads: int, head_dim: int) -> int:
    """q, k, v, o projections (no biases) and the output bias."""
    return 2 * width * head_dim * (num_heads + num_kv_heads) + width

  def _qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    def proj(w, names):
      return constrain(jnp.einsum("bld,dnh->blnh", x, w[...].astype(self.dtype)), names)

    q = proj(self.q, ("batch", "length", "heads", "head_dim"))
    k = proj(self.k, ("batch", "length", "kv_heads", "head_dim"))
    v = proj(self.v, ("batch", "length", "kv_heads", "head_dim"))
    return (rope(q, positions, self.rope_base, self.rope_dims),
            rope(k, positions, self.rope_base, self.rope_dims), v)

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    with jax.named_scope("attention"):  # a category of `python -m birdie_jax.bench profile`
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.impl)
    out = checkpoint_name(out, ATTENTION_OUTPUT)
    out = constrain(out, ("batch", "length", "heads", "head_dim"))
    y = jnp.einsum("blnh,nhd->bld", out, self.o[...].astype(self.dtype)) + self.o_bias[...]
    return constrain(y.astype(self.dtype), ("batch", "length", "act_embed"))

  def __call__(self, x: jax.Array, seg: Segments, *,
               cache_len: int | None = None) -> tuple[jax.Array, Cache]:
    """(B, L, D) -> (B, L, D); with `cache_len`, the ring-buffer KV cache after the last column."""
    q, k, v = self._qkv(x, seg.positions)
    with jax.named_scope("attention"):
      mask = attention_mask(seg.segment_ids, seg.prefix_mask, prefix_lm=self.prefix_lm,
                            window=self.window)
    y = self._attend(q, k, v, mask)
    if cache_len is None:
      return y, None
    slots = min(self.window, cache_len) if self.window else cache_len
    ids = seg.segment_ids
    valid = (ids == ids[:, -1:]) & (ids > 0)
    return y, {"k": _to_ring(k, slots), "v": _to_ring(v, slots), "valid": _to_ring(valid, slots)}

  def step(self, x: jax.Array, cache: Cache, info: StepInfo) -> tuple[jax.Array, Cache]:
    """One token (B, 1, D) at column `info.index`, attending to the valid cached slots; the
    update is the token's key, value and validity for slot `index % R` (`RingWrite`s)."""
    q, k, v = self._qkv(x, info.positions)
    slot = info.index % cache["k"].shape[1]
    write = {"k": RingWrite(k, slot), "v": RingWrite(v, slot),
             "valid": RingWrite(jnp.ones((x.shape[0], 1), bool), slot)}
    new = update_cache(cache, write)
    y = self._attend(q, new["k"], new["v"], new["valid"][:, None, None, :])
    return y, write


def attention_block(config: ModelConfig, *, window: int, rngs: nnx.Rngs) -> ResidualBlock:
  """An attention residual block (prefix-LM when `config.bidirectional`) + gated MLP."""
  dtype = as_dtype(config.dtype)
  mixer = Attention(config.width, config.num_heads, config.num_kv_heads, config.head_dim,
                    rngs=rngs, dtype=dtype, prefix_lm=config.bidirectional, window=window,
                    rope_base=config.rope_base, rope_fraction=config.rope_fraction,
                    impl=config.attention_impl)
  mlp = MLP(config.width, mlp_hidden(config), rngs=rngs, dtype=dtype)
  return ResidualBlock(config.width, mixer, mlp)


def attention_block_params(config: ModelConfig) -> int:
  """Parameters of `attention_block`: two norms, the attention and the MLP."""
  attn = Attention.param_count(config.width, config.num_heads, config.num_kv_heads,
                               config.head_dim)
  return 2 * config.width + attn + mlp_params(config.width, mlp_hidden(config))
