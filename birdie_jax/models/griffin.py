"""Griffin: Hawk's recurrent blocks interleaved with local sliding-window (multi-query) attention.

RecurrentGemma's pattern with `attention_every = 3`: two recurrent blocks, then one attention block,
repeated. With `config.bidirectional`, recurrent blocks 0, n, 2n, ... (counting recurrent blocks
only, n = `config.bidirectional_every`) split their RG-LRU channels, and every attention block uses
the prefix-LM mask within its window.
"""
from __future__ import annotations

from flax import nnx

from birdie_jax.models.attention import attention_block, attention_block_params
from birdie_jax.models.blocks import ResidualBlock, bidirectional_layers
from birdie_jax.models.hawk import recurrent_block, recurrent_block_params
from birdie_jax.models.lm import LanguageModel
from birdie_jax.models.model_config import ModelConfig


def is_attention(config: ModelConfig, index: int) -> bool:
  """Whether block `index` is an attention block: the last of every `attention_every` blocks."""
  return index % config.attention_every == config.attention_every - 1


class GriffinLM(LanguageModel):
  """Griffin with local attention of `config.attention_window` tokens."""

  def make_blocks(self, config: ModelConfig, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`config.depth` blocks in the recurrent, recurrent, attention pattern."""
    kinds = [is_attention(config, i) for i in range(config.depth)]
    bidir = iter(bidirectional_layers(kinds.count(False), config.bidirectional,
                                      config.bidirectional_every))
    return [attention_block(config, window=config.attention_window, rngs=rngs) if attn
            else recurrent_block(config, bidirectional=next(bidir), rngs=rngs) for attn in kinds]

  @staticmethod
  def param_count(config: ModelConfig, vocab_size: int) -> int:
    """Tied embedding + final norm + the recurrent and attention blocks."""
    num_attention = config.depth // config.attention_every
    return (vocab_size * config.width + config.width
            + (config.depth - num_attention) * recurrent_block_params(config)
            + num_attention * attention_block_params(config))
