"""The paper's Gated SSM (Birdie §3.4): a pre-norm residual block with the SSM and MLP fused.

    i = sigmoid(W_i x),  z = W_z x,  o = GeLU(W_o x),  f = sigmoid(W_f x)
    h_t = f_t * h_{t-1} + i_t * z_t,     y = W_out(o * h)

The state width is `config.lru_width`. Document resets and the bidirectional split are those of the
RG-LRU (`recurrence`): where no state flows in, `f = 0` and `h_t = i_t * z_t`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax.models.blocks import Cache, ResidualBlock, Segments, StepInfo, bidirectional_layers
from birdie_jax.models.layers import as_dtype, dense
from birdie_jax.models.lm import LanguageModel
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.models.recurrence import decay_keep, split_scan, split_step
from birdie_jax.parallel.sharding import constrain


class GatedSSM(nnx.Module):
  """The fused gated SSM mixer over (B, L, width) inputs with a `state_width` recurrence."""

  def __init__(self, width: int, state_width: int, *, bidirectional: bool, rngs: nnx.Rngs,
               dtype: jnp.dtype, scan_impl: str = "auto"):
    if bidirectional and state_width % 2:
      raise ValueError(f"a bidirectional Gated SSM needs an even state width, got {state_width}")
    names = ("embed", "lru")
    self.input_gate = dense(width, state_width, names, rngs=rngs, dtype=dtype)
    self.proj = dense(width, state_width, names, rngs=rngs, dtype=dtype)
    self.out_gate = dense(width, state_width, names, rngs=rngs, dtype=dtype)
    self.forget_gate = dense(width, state_width, names, rngs=rngs, dtype=dtype)
    self.out = dense(state_width, width, ("lru", "embed"), rngs=rngs, dtype=dtype)
    self.bidirectional = bidirectional
    self.state_width = state_width
    self.scan_impl = scan_impl

  @staticmethod
  def param_count(width: int, state_width: int) -> int:
    """Four width -> state projections and the state -> width output, all with biases."""
    return 4 * (width * state_width + state_width) + state_width * width + width

  def _decay_and_drive(self, x: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 decay `f` (zero where `keep` is False) and drive `i * z` in the compute dtype."""
    f = jax.nn.sigmoid(self.forget_gate(x).astype(jnp.float32))
    drive = jax.nn.sigmoid(self.input_gate(x)) * self.proj(x)
    return jnp.where(keep, f, 0.0), constrain(drive, ("batch", "length", "lru"))

  def _output(self, x: jax.Array, h: jax.Array) -> jax.Array:
    h = constrain(jax.nn.gelu(self.out_gate(x)) * h, ("batch", "length", "lru"))
    return constrain(self.out(h), ("batch", "length", "act_embed"))

  def __call__(self, x: jax.Array, seg: Segments, *,
               cache_len: int | None = None) -> tuple[jax.Array, Cache]:
    """(B, L, D) -> (B, L, D); the cache holds the forward state after the last position."""
    keep = decay_keep(seg.segment_ids, seg.prefix_mask, self.state_width, self.bidirectional)
    a, drive = self._decay_and_drive(x, keep)
    h, state = split_scan(a, drive, bidirectional=self.bidirectional, impl=self.scan_impl)
    return self._output(x, h), (None if cache_len is None else {"h": state})

  def step(self, x: jax.Array, cache: Cache, info: StepInfo) -> tuple[jax.Array, Cache]:
    """One token (B, 1, D): a cost independent of how many tokens came before."""
    del info  # the recurrence needs no position
    forward = self.state_width // 2 if self.bidirectional else self.state_width
    a, drive = self._decay_and_drive(x, jnp.arange(self.state_width) < forward)
    h, state = split_step(a, drive, cache["h"], bidirectional=self.bidirectional)
    return self._output(x, h), {"h": state}


class GatedSSMLM(LanguageModel):
  """A stack of fused Gated SSM blocks (no separate MLP). With `config.bidirectional`, blocks 0, n,
  2n, ... (n = `config.bidirectional_every`) split their state into forward and prefix-reverse
  halves."""

  def make_blocks(self, config: ModelConfig, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`config.depth` Gated SSM blocks."""
    bidir = bidirectional_layers(config.depth, config.bidirectional, config.bidirectional_every)
    dtype = as_dtype(config.dtype)
    return [ResidualBlock(config.width, GatedSSM(config.width, config.lru_width, bidirectional=b,
                                                 rngs=rngs, dtype=dtype,
                                                 scan_impl=config.scan_impl))
            for b in bidir]

  @staticmethod
  def param_count(config: ModelConfig, vocab_size: int) -> int:
    """Tied embedding + final norm + depth x (norm + Gated SSM)."""
    block = config.width + GatedSSM.param_count(config.width, config.lru_width)
    return vocab_size * config.width + config.width + config.depth * block
