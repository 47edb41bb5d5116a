"""The language model shared by every family: tied embedding, residual blocks, final norm.

A family subclasses `LanguageModel`, builds its blocks in `make_blocks` and gives its analytic
parameter count in `param_count`. Training calls the model on packed rows; decoding calls `prefill`
on a left-padded prompt and then `step` once per new token.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax.models.blocks import Cache, Segments, StepInfo
from birdie_jax.models.layer_stack import BlockStack
from birdie_jax.models.layers import Embedder, RMSNorm, as_dtype
from birdie_jax.models.model_config import ModelConfig


def mlp_hidden(config: ModelConfig) -> int:
  """The MLP hidden width: round(mlp_expansion * width)."""
  return int(round(config.mlp_expansion * config.width))


def mlp_params(width: int, hidden: int) -> int:
  """Parameters of the gated MLP (gate, up, down with biases)."""
  return 2 * (width * hidden + hidden) + hidden * width + width


class LanguageModel(nnx.Module):
  """Token ids -> float32 logits, for packed rows (training) or one token at a time (decoding).

  Each family defines `make_blocks(self, config, rngs) -> list[ResidualBlock]` (its blocks, first
  to last) and the static `param_count(config, vocab_size) -> int` (its analytic parameter count).
  `config.scan_layers` stacks the repeats of the blocks' pattern and runs them with one scan
  (`layer_stack`); `config.remat` picks what each block keeps for the backward pass.
  """

  def __init__(self, config: ModelConfig, vocab_size: int, *, rngs: nnx.Rngs):
    self.embed = Embedder(vocab_size, config.width, rngs=rngs, dtype=as_dtype(config.dtype),
                          scale=config.embed_scale, soft_cap=config.logits_soft_cap)
    self.blocks = BlockStack(self.make_blocks(config, rngs), scan=config.scan_layers,
                             remat=config.remat)
    self.final_norm = RMSNorm(config.width)
    self.loss_chunk = config.loss_chunk  # `forward.token_losses`: 0 plain, > 0 chunked_loss.py

  def __call__(self, inputs: jax.Array, *, segment_ids: jax.Array, positions: jax.Array,
               prefix_mask: jax.Array) -> jax.Array:
    """(B, L) ids with their segment ids, per-segment positions and prefix mask -> logits."""
    return self.embed.decode(self.features(inputs, segment_ids=segment_ids, positions=positions,
                                           prefix_mask=prefix_mask))

  def features(self, inputs: jax.Array, *, segment_ids: jax.Array, positions: jax.Array,
               prefix_mask: jax.Array) -> jax.Array:
    """The final-normed hidden states (B, L, width) that `embed.decode` maps to logits: a caller
    that scores a few positions decodes only those (the lab: no (B, L, vocab) logits)."""
    seg = Segments(segment_ids, positions, prefix_mask)
    x, _ = self.blocks(self.embed.encode(inputs), seg)
    return self.final_norm(x)

  def prefill(self, inputs: jax.Array, *, segment_ids: jax.Array, positions: jax.Array,
              prefix_mask: jax.Array, cache_len: int) -> tuple[jax.Array, Cache]:
    """The prompt pass: logits (B, L, V) and the cache for decoding after column L - 1.

    Prompts must be left-padded (segment id 0) so every row's last column is its last token, and
    must end past the last document's prefix (at its BEGIN token or later): decoded tokens are
    never prefix. `cache_len` bounds prompt plus generated tokens (global attention's KV cache).
    """
    seg = Segments(segment_ids, positions, prefix_mask)
    x, caches = self.blocks(self.embed.encode(inputs), seg, cache_len=cache_len)
    cache = {"index": jnp.asarray(inputs.shape[1], jnp.int32),
             "positions": positions[:, -1].astype(jnp.int32) + 1, "blocks": caches}
    return self.embed.decode(self.final_norm(x)), cache

  def step(self, tokens: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
    """One new token per row (B,) -> its logits (B, V) and the advanced cache."""
    info = StepInfo(cache["positions"][:, None], cache["index"])
    x, caches = self.blocks.step(self.embed.encode(tokens[:, None]), cache["blocks"], info)
    logits = self.embed.decode(self.final_norm(x))[:, 0]
    return logits, {"index": cache["index"] + 1, "positions": cache["positions"] + 1,
                    "blocks": caches}
