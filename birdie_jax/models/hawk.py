"""Hawk (Griffin's all-recurrent model): pre-norm residual blocks of RG-LRU temporal mixing + MLP."""
from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from birdie_jax.models.blocks import Cache, ResidualBlock, Segments, StepInfo, bidirectional_layers
from birdie_jax.models.layers import MLP, Conv1D, as_dtype, dense
from birdie_jax.models.lm import LanguageModel, mlp_hidden, mlp_params
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

  @staticmethod
  def param_count(cfg: ml_collections.ConfigDict) -> int:
    """gate, proj, out (with biases), conv taps + bias, two block-diagonal gates + Lambda."""
    d, w = cfg.width, cfg.lru_width
    rglru = 2 * (w * w // cfg.num_heads + w) + w
    return 2 * (d * w + w) + (w * d + d) + (cfg.conv_width + 1) * w + rglru

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


def recurrent_block(cfg: ml_collections.ConfigDict, *, bidirectional: bool,
                    rngs: nnx.Rngs) -> ResidualBlock:
  """A Hawk residual block: RG-LRU mixer + gated MLP."""
  mixer = RecurrentMixer(cfg, bidirectional=bidirectional, rngs=rngs)
  mlp = MLP(cfg.width, mlp_hidden(cfg), rngs=rngs, dtype=as_dtype(cfg.dtype))
  return ResidualBlock(cfg.width, mixer, mlp)


def recurrent_block_params(cfg: ml_collections.ConfigDict) -> int:
  """Parameters of `recurrent_block`: two norms, the mixer and the MLP."""
  return 2 * cfg.width + RecurrentMixer.param_count(cfg) + mlp_params(cfg.width, mlp_hidden(cfg))


class HawkLM(LanguageModel):
  """Hawk. With `cfg.bidirectional`, blocks 0, n, 2n, ... (n = `cfg.bidirectional_every`) split
  their RG-LRU channels into a forward and a prefix-reverse half; the Conv1D stays causal in every
  channel (the paper leaves its bidirectional form open; see reference/birdie.md §3.1)."""

  def make_blocks(self, cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`cfg.depth` recurrent blocks."""
    bidir = bidirectional_layers(cfg.depth, cfg.bidirectional, cfg.bidirectional_every)
    return [recurrent_block(cfg, bidirectional=b, rngs=rngs) for b in bidir]

  @staticmethod
  def param_count(cfg: ml_collections.ConfigDict, vocab_size: int) -> int:
    """Tied embedding + final norm + depth recurrent blocks."""
    return vocab_size * cfg.width + cfg.width + cfg.depth * recurrent_block_params(cfg)
