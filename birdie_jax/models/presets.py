"""Named model shapes per family (`model.preset`), `resolve` (a config's `model` group -> the
`ModelConfig` the models take) and the model section's validation.

A non-empty `model.preset` replaces the family's shape keys (those listed in the preset: width,
depth, recurrence width, heads, MLP expansion, attention window and pattern) with the preset's
values; the other model keys (bidirectional, dtype, scan_impl, remat, ...) come from the config.
MLP widths are the paper's 8/3 x width rounded up to a multiple of 256 (as LLaMA does), so the
matmuls tile the accelerators' matrix units (2048 x 8/3 = 5461 -> 5632, expansion 2.75); 3x
widths are multiples already. `1.4b` follows the paper's Table 7; `7b` follows RecurrentGemma's
HAWK/GRIFFIN_PAPER_7B for the recurrent families and the usual 32 x 4096 shape for the Transformer.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from birdie_jax.errors import ConfigError
from birdie_jax.models.attention import rope_dims
from birdie_jax.models.layers import EMBED_SCALES
from birdie_jax.models.model_config import ModelConfig

PRESET_NAMES = ("tiny", "150m", "400m", "1.4b", "7b")

_HAWK = {
    "tiny": dict(width=32, depth=2, lru_width=32, num_heads=2, mlp_expansion=3.0),
    "150m": dict(width=768, depth=16, lru_width=1024, num_heads=8, mlp_expansion=8 / 3),
    "400m": dict(width=1024, depth=26, lru_width=1536, num_heads=8, mlp_expansion=2.75),
    "1.4b": dict(width=2048, depth=20, lru_width=2560, num_heads=16, mlp_expansion=2.75),
    "7b": dict(width=4096, depth=32, lru_width=5632, num_heads=32, mlp_expansion=3.0),
}
_GATED_SSM = {
    "tiny": dict(width=32, depth=2, lru_width=32),
    "150m": dict(width=768, depth=32, lru_width=1024),
    "400m": dict(width=1024, depth=48, lru_width=1536),
    "1.4b": dict(width=2048, depth=48, lru_width=2560),
    "7b": dict(width=4096, depth=60, lru_width=5632),
}
_TRANSFORMER = {
    "tiny": dict(width=32, depth=2, num_heads=2, num_kv_heads=2, head_dim=16, mlp_expansion=8 / 3),
    "150m": dict(width=768, depth=18, num_heads=12, num_kv_heads=12, head_dim=64,
                 mlp_expansion=8 / 3),
    "400m": dict(width=1024, depth=28, num_heads=16, num_kv_heads=16, head_dim=64,
                 mlp_expansion=2.75),
    "1.4b": dict(width=2048, depth=24, num_heads=16, num_kv_heads=16, head_dim=128,
                 mlp_expansion=2.75),
    "7b": dict(width=4096, depth=32, num_heads=32, num_kv_heads=32, head_dim=128,
               mlp_expansion=2.6875),
}
_GRIFFIN = {
    "tiny": dict(width=32, depth=3, lru_width=32, num_heads=2, num_kv_heads=1, head_dim=16,
                 mlp_expansion=3.0, attention_window=6, attention_every=3),
    "150m": dict(width=768, depth=18, lru_width=1024, num_heads=8, num_kv_heads=1, head_dim=96,
                 mlp_expansion=8 / 3, attention_window=1024, attention_every=3),
    "400m": dict(width=1024, depth=27, lru_width=1536, num_heads=8, num_kv_heads=1, head_dim=128,
                 mlp_expansion=2.75, attention_window=1024, attention_every=3),
    "1.4b": dict(width=2048, depth=24, lru_width=2560, num_heads=16, num_kv_heads=1, head_dim=128,
                 mlp_expansion=2.75, attention_window=2048, attention_every=3),
    "7b": dict(width=4096, depth=32, lru_width=5632, num_heads=32, num_kv_heads=1, head_dim=128,
               mlp_expansion=3.0, attention_window=1024, attention_every=3),
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "hawk": _HAWK, "gated_ssm": _GATED_SSM, "transformer": _TRANSFORMER, "griffin": _GRIFFIN}

_RECURRENT = ("hawk", "gated_ssm", "griffin")
_ATTENTION = ("transformer", "griffin")
_RG_LRU = ("hawk", "griffin")
_MLP = ("hawk", "griffin", "transformer")  # blocks with an MLP of round(expansion x width)


def resolve(config: ModelConfig | Mapping[str, Any]) -> ModelConfig:
  """The `ModelConfig` of a `model` group, its preset's shape keys filled in.

  `config` is the group (a ConfigDict or any mapping of its keys) or a ModelConfig, which is
  resolved already and comes back as it is.
  """
  if isinstance(config, ModelConfig):
    return config
  resolved = ModelConfig.from_group(config)
  if not resolved.preset:
    return resolved
  if resolved.family not in PRESETS or resolved.preset not in PRESETS[resolved.family]:
    raise ConfigError(f"model.preset must be one of {PRESET_NAMES} (or ''), "
                      f"got {resolved.preset!r}")
  return dataclasses.replace(resolved, **PRESETS[resolved.family][resolved.preset])


def validate_model_config(config: ModelConfig | Mapping[str, Any]) -> None:
  """Raises ConfigError for an impossible model shape (after applying the preset)."""
  config = resolve(config)
  finite = math.isfinite(config.mlp_expansion)
  hidden = round(config.mlp_expansion * config.width) if finite else config.mlp_expansion
  if config.family in _MLP and not (finite and hidden >= 1):
    raise ConfigError(f"model.mlp_expansion ({config.mlp_expansion:g}) x model.width "
                      f"({config.width}) gives an MLP of width {hidden}: it must be at least 1")
  if config.family in _RECURRENT and config.bidirectional and config.lru_width % 2:
    raise ConfigError(f"a bidirectional {config.family} splits its recurrence in half: "
                      f"model.lru_width ({config.lru_width}) must be even")
  if config.family in _RG_LRU and config.lru_width % config.num_heads:
    raise ConfigError(f"model.lru_width ({config.lru_width}) must be divisible by "
                      f"model.num_heads ({config.num_heads})")
  if config.family in _ATTENTION:
    if config.num_heads % config.num_kv_heads:
      raise ConfigError(f"model.num_heads ({config.num_heads}) must be a multiple of "
                        f"model.num_kv_heads ({config.num_kv_heads})")
    if config.head_dim % 2:
      raise ConfigError(f"model.head_dim ({config.head_dim}) must be even for RoPE")
    if config.rope_base <= 1.0:
      raise ConfigError(f"model.rope_base must exceed 1, got {config.rope_base}")
  if config.embed_scale not in EMBED_SCALES:
    raise ConfigError(f"model.embed_scale must be one of {EMBED_SCALES}, "
                      f"got {config.embed_scale!r}")
  if not 0.0 <= config.logits_soft_cap < math.inf:
    raise ConfigError(f"model.logits_soft_cap must be 0 (off) or positive, "
                      f"got {config.logits_soft_cap}")
  if config.family in _ATTENTION:
    dims = rope_dims(config.head_dim, config.rope_fraction)
    if not 0.0 < config.rope_fraction <= 1.0 or dims < 2 or dims % 2:
      raise ConfigError(f"model.rope_fraction ({config.rope_fraction:g}) x model.head_dim "
                        f"({config.head_dim}) must be an even number of rotated dims in "
                        f"[2, head_dim], got {dims}")
  if config.family == "griffin" and config.depth < config.attention_every:
    raise ConfigError(f"griffin needs model.depth >= model.attention_every "
                      f"({config.attention_every}) to have an attention block, "
                      f"got depth {config.depth}")
