"""The Transformer baseline: pre-norm attention (RoPE, MHA/GQA) + gated MLP blocks.

Causal within each packed document; with `config.bidirectional` (Transformer-Birdie) every layer
uses the prefix-LM mask: bidirectional among a document's prefix positions, causal elsewhere.
"""
from __future__ import annotations

from flax import nnx

from birdie_jax.models.blocks import ResidualBlock
from birdie_jax.models.attention import attention_block, attention_block_params
from birdie_jax.models.lm import LanguageModel
from birdie_jax.models.model_config import ModelConfig


class TransformerLM(LanguageModel):
  """`config.depth` global-attention blocks."""

  def make_blocks(self, config: ModelConfig, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`config.depth` attention blocks over the whole row."""
    return [attention_block(config, window=0, rngs=rngs) for _ in range(config.depth)]

  @staticmethod
  def param_count(config: ModelConfig, vocab_size: int) -> int:
    """Tied embedding + final norm + depth attention blocks."""
    blocks = config.depth * attention_block_params(config)
    return vocab_size * config.width + config.width + blocks
