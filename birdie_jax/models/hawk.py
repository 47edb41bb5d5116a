"""Hawk (Griffin's all-recurrent model): pre-norm residual blocks of RG-LRU temporal mixing and an
MLP."""
from __future__ import annotations

import jax
from flax import nnx

from birdie_jax.models.blocks import Cache, ResidualBlock, Segments, StepInfo, bidirectional_layers
from birdie_jax.models.layers import MLP, Conv1D, as_dtype, dense
from birdie_jax.models.lm import LanguageModel, mlp_hidden, mlp_params
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.models.rglru import RGLRU
from birdie_jax.parallel.sharding import constrain


class RecurrentMixer(nnx.Module):
  """Griffin's recurrent block: out(gelu(W_y x) * RG-LRU(Conv1D(W_x x)))."""

  def __init__(self, config: ModelConfig, *, bidirectional: bool, rngs: nnx.Rngs):
    dtype = as_dtype(config.dtype)
    self.gate = dense(config.width, config.lru_width, ("embed", "lru"), rngs=rngs, dtype=dtype)
    self.proj = dense(config.width, config.lru_width, ("embed", "lru"), rngs=rngs, dtype=dtype)
    self.conv = Conv1D(config.lru_width, config.conv_width, rngs=rngs, dtype=dtype)
    self.lru = RGLRU(config.lru_width, config.num_heads, bidirectional=bidirectional, rngs=rngs,
                     dtype=dtype, scan_impl=config.scan_impl)
    self.out = dense(config.lru_width, config.width, ("lru", "embed"), rngs=rngs, dtype=dtype)

  @staticmethod
  def param_count(config: ModelConfig) -> int:
    """gate, proj, out (with biases), conv taps + bias, two block-diagonal gates + Lambda."""
    d, w = config.width, config.lru_width
    rglru = 2 * (w * w // config.num_heads + w) + w
    return 2 * (d * w + w) + (w * d + d) + (config.conv_width + 1) * w + rglru

  def __call__(self, x: jax.Array, seg: Segments, *,
               cache_len: int | None = None) -> tuple[jax.Array, Cache]:
    """(B, L, D) -> (B, L, D); the cache holds the conv window and the RG-LRU's forward state."""
    gate = jax.nn.gelu(self.gate(x))
    u = constrain(self.proj(x), ("batch", "length", "lru"))
    h = self.conv(u, seg.segment_ids)
    h, state = self.lru(h, seg.segment_ids, seg.prefix_mask)
    y = self._output(h, gate)
    if cache_len is None:
      return y, None
    return y, {"conv": self.conv.final_state(u, seg.segment_ids), "lru": state}

  def step(self, x: jax.Array, cache: Cache, info: StepInfo) -> tuple[jax.Array, Cache]:
    """One token (B, 1, D): a cost independent of how many tokens came before."""
    del info  # the recurrence needs no position
    gate = jax.nn.gelu(self.gate(x))
    h, conv = self.conv.step(self.proj(x), cache["conv"])
    h, state = self.lru.step(h, cache["lru"])
    return self._output(h, gate), {"conv": conv, "lru": state}

  def _output(self, h: jax.Array, gate: jax.Array) -> jax.Array:
    h = constrain(h * gate, ("batch", "length", "lru"))
    return constrain(self.out(h), ("batch", "length", "act_embed"))


def recurrent_block(config: ModelConfig, *, bidirectional: bool, rngs: nnx.Rngs) -> ResidualBlock:
  """A Hawk residual block: RG-LRU mixer + gated MLP."""
  mixer = RecurrentMixer(config, bidirectional=bidirectional, rngs=rngs)
  mlp = MLP(config.width, mlp_hidden(config), rngs=rngs, dtype=as_dtype(config.dtype))
  return ResidualBlock(config.width, mixer, mlp)


def recurrent_block_params(config: ModelConfig) -> int:
  """Parameters of `recurrent_block`: two norms, the mixer and the MLP."""
  mlp = mlp_params(config.width, mlp_hidden(config))
  return 2 * config.width + RecurrentMixer.param_count(config) + mlp


class HawkLM(LanguageModel):
  """Hawk. With `config.bidirectional`, blocks 0, n, 2n, ... (n = `config.bidirectional_every`)
  split their RG-LRU channels into a forward and a prefix-reverse half; the Conv1D stays causal in
  every channel (the Birdie paper, arXiv 2411.01030, leaves the Conv1D's bidirectional form
  open)."""

  def make_blocks(self, config: ModelConfig, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`config.depth` recurrent blocks."""
    bidir = bidirectional_layers(config.depth, config.bidirectional, config.bidirectional_every)
    return [recurrent_block(config, bidirectional=b, rngs=rngs) for b in bidir]

  @staticmethod
  def param_count(config: ModelConfig, vocab_size: int) -> int:
    """Tied embedding + final norm + depth recurrent blocks."""
    return vocab_size * config.width + config.width + config.depth * recurrent_block_params(config)
