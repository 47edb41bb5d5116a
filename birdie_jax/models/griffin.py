"""Griffin: Hawk's recurrent blocks interleaved with local sliding-window (multi-query) attention.

RecurrentGemma's pattern with `attention_every = 3`: two recurrent blocks, then one attention block,
repeated. With `cfg.bidirectional`, recurrent blocks 0, n, 2n, ... (counting recurrent blocks only,
n = `cfg.bidirectional_every`) split their RG-LRU channels, and every attention block uses the
prefix-LM mask within its window.
"""
from __future__ import annotations

import ml_collections
from flax import nnx

from birdie_jax.models.attention import attention_block, attention_block_params
from birdie_jax.models.blocks import ResidualBlock, bidirectional_layers
from birdie_jax.models.hawk import recurrent_block, recurrent_block_params
from birdie_jax.models.lm import LanguageModel


def is_attention(cfg: ml_collections.ConfigDict, index: int) -> bool:
  """Whether block `index` is an attention block: the last of every `attention_every` blocks."""
  return index % cfg.attention_every == cfg.attention_every - 1


class GriffinLM(LanguageModel):
  """Griffin with local attention of `cfg.attention_window` tokens."""

  def make_blocks(self, cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`cfg.depth` blocks in the recurrent, recurrent, attention pattern."""
    kinds = [is_attention(cfg, i) for i in range(cfg.depth)]
    bidir = iter(bidirectional_layers(kinds.count(False), cfg.bidirectional,
                                      cfg.bidirectional_every))
    return [attention_block(cfg, window=cfg.attention_window, rngs=rngs) if attn
            else recurrent_block(cfg, bidirectional=next(bidir), rngs=rngs) for attn in kinds]

  @staticmethod
  def param_count(cfg: ml_collections.ConfigDict, vocab_size: int) -> int:
    """Tied embedding + final norm + the recurrent and attention blocks."""
    num_attention = cfg.depth // cfg.attention_every
    return (vocab_size * cfg.width + cfg.width
            + (cfg.depth - num_attention) * recurrent_block_params(cfg)
            + num_attention * attention_block_params(cfg))
