"""Hawk (Griffin's all-recurrent model): pre-norm residual blocks of RG-LRU temporal mixing + MLP."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from birdie_jax.models.layers import MLP, Conv1D, Embedder, RMSNorm, as_dtype, dense
from birdie_jax.models.rglru import RGLRU
from birdie_jax.parallel.sharding import constrain


class RecurrentMixer(nnx.Module):
  """Griffin's recurrent block: out(gelu(W_y x) * RG-LRU(Conv1D(W_x x)))."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, bidirectional: bool, rngs: nnx.Rngs):
    dtype = as_dtype(cfg.dtype)
    self.gate = dense(cfg.width, cfg.lru_width, ("embed", "lru"), rngs=rngs, dtype=dtype)
    self.proj = dense(cfg.width, cfg.lru_width, ("embed", "lru"), rngs=rngs, dtype=dtype)
    self.conv = Conv1D(cfg.lru_width, cfg.conv_width, rngs=rngs, dtype=dtype)
    self.lru = RGLRU(cfg.lru_width, cfg.num_heads, bidirectional=bidirectional, rngs=rngs,
                     dtype=dtype, scan_impl=cfg.scan_impl)
    self.out = dense(cfg.lru_width, cfg.width, ("lru", "embed"), rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, segment_ids: jax.Array, prefix_mask: jax.Array | None):
    gate = jax.nn.gelu(self.gate(x))
    h = constrain(self.proj(x), ("batch", "length", "lru"))
    h = self.conv(h, segment_ids)
    h = self.lru(h, segment_ids, prefix_mask)
    h = constrain(h * gate, ("batch", "length", "lru"))
    return constrain(self.out(h), ("batch", "length", "act_embed"))


class HawkBlock(nnx.Module):
  """x + mixer(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, bidirectional: bool, rngs: nnx.Rngs):
    self.mixer_norm = RMSNorm(cfg.width)
    self.mixer = RecurrentMixer(cfg, bidirectional=bidirectional, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.width)
    self.mlp = MLP(cfg.width, int(round(cfg.mlp_expansion * cfg.width)), rngs=rngs,
                   dtype=as_dtype(cfg.dtype))

  def __call__(self, x: jax.Array, segment_ids: jax.Array, prefix_mask: jax.Array | None):
    x = x + self.mixer(self.mixer_norm(x), segment_ids, prefix_mask)
    return x + self.mlp(self.mlp_norm(x))


class HawkLM(nnx.Module):
  """Token ids -> float32 logits. With `cfg.bidirectional`, every other block (the first, third, …)
  is bidirectional over the prefix."""

  def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int, *, rngs: nnx.Rngs):
    self.embed = Embedder(vocab_size, cfg.width, rngs=rngs, dtype=as_dtype(cfg.dtype))
    self.blocks = nnx.List([
        HawkBlock(cfg, bidirectional=bool(cfg.bidirectional) and i % 2 == 0, rngs=rngs)
        for i in range(cfg.depth)])
    self.final_norm = RMSNorm(cfg.width)
    self.remat = cfg.remat

  def __call__(self, inputs: jax.Array, *, segment_ids: jax.Array, positions: jax.Array,
               prefix_mask: jax.Array) -> jax.Array:
    """(B, L) ids with their segment ids, per-segment positions and prefix mask -> logits."""
    del positions  # the recurrence needs no position signal
    x = self.embed.encode(inputs)
    for block in self.blocks:
      if self.remat:
        x = nnx.remat(lambda b, *args: b(*args))(block, x, segment_ids, prefix_mask)
      else:
        x = block(x, segment_ids, prefix_mask)
    return self.embed.decode(self.final_norm(x))
