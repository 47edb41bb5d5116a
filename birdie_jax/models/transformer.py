"""The Transformer baseline: pre-norm attention (RoPE, MHA/GQA) + gated MLP blocks.

Causal within each packed document; with `cfg.bidirectional` (Transformer-Birdie) every layer uses
the prefix-LM mask: bidirectional among a document's prefix positions, causal elsewhere.
"""
from __future__ import annotations

import ml_collections
from flax import nnx

from birdie_jax.models.blocks import ResidualBlock
from birdie_jax.models.attention import attention_block, attention_block_params
from birdie_jax.models.lm import LanguageModel


class TransformerLM(LanguageModel):
  """`cfg.depth` global-attention blocks."""

  def make_blocks(self, cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> list[ResidualBlock]:
    """`cfg.depth` attention blocks over the whole row."""
    return [attention_block(cfg, window=0, rngs=rngs) for _ in range(cfg.depth)]

  @staticmethod
  def param_count(cfg: ml_collections.ConfigDict, vocab_size: int) -> int:
    """Tied embedding + final norm + depth attention blocks."""
    return vocab_size * cfg.width + cfg.width + cfg.depth * attention_block_params(cfg)
