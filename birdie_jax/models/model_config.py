"""`ModelConfig`: the `model` group of the config, typed and frozen; every model class takes one.

    config = presets.resolve(run_config.model)   # the preset's shape keys filled in
    model = build_model(config, vocab_size, rngs=nnx.Rngs(0))
    smaller = dataclasses.replace(config, depth=2)   # a variant: the config itself never changes

`ModelConfig.from_group` reads the group of `birdie_jax/config.py` (a ConfigDict or any mapping
with the same keys, so the models need not import ml_collections) and refuses a group with a key
more or less than the fields here: a key added to the config must be added here, never dropped
on the way to the model. The defaults and the checks of values stay in `config.py` (one place for
each); a field here has no default, so a partial group fails instead of running with a guess.
Frozen and hashable: a static argument of `jax.jit` or a cache key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from birdie_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model's family and shape, as resolved from `model.preset` and the shape keys.

  Attributes:
    family: hawk | gated_ssm | griffin | transformer.
    preset: the `model.preset` the shape keys came from ('' for none). A ModelConfig is always
      resolved: its shape keys are the model's, and resolving it again changes nothing.
    bidirectional: Birdie's bidirectional prefix: recurrent blocks split their channels into a
      forward and a prefix-reverse half; attention uses the prefix-LM mask.
    bidirectional_every: recurrent blocks 0, n, 2n, ... (n = this) are the bidirectional ones.
    width: the residual stream width.
    depth: the number of residual blocks.
    lru_width: the recurrence width (the RG-LRU's; the Gated SSM's state).
    num_heads: attention query heads; the RG-LRU gates' block-diagonal blocks.
    num_kv_heads: attention key/value heads (1: multi-query; num_heads: multi-head).
    head_dim: the width of one attention head.
    attention_window: Griffin's local attention window, in tokens.
    attention_every: Griffin's pattern: block i is attention when i % n == n - 1.
    rope_base: RoPE's maximum wavelength.
    rope_fraction: the share of each head's dims RoPE rotates, the first ones (RecurrentGemma: 0.5).
    attention_impl: auto | xla | cudnn (`attention.resolve_implementation`).
    conv_width: the temporal Conv1D's taps.
    mlp_expansion: the MLP's hidden width is round(mlp_expansion * width).
    embed_scale: the input embedding's multiplier: sqrt_width | sqrt_width_bf16 (RecurrentGemma
      2B/9B) | none (`layers.Embedder`).
    logits_soft_cap: c > 0 bounds the logits with c * tanh(logits / c) (RecurrentGemma: 30); 0: off.
    dtype: the compute dtype, float32 | bfloat16 (parameters stay float32).
    scan_impl: the `ops.scan.linear_scan` implementation of the recurrences.
    remat: what each block keeps for the backward pass (`remat.py`).
    scan_layers: stack the blocks' repeating pattern and run it as one scan (`layer_stack.py`).
    loss_chunk: > 0: the loss decodes this many positions of each row at a time and never holds
      the whole batch's logits (`chunked_loss.py`); 0: the plain path, all logits at once.
  """

  family: str
  preset: str
  bidirectional: bool
  bidirectional_every: int
  width: int
  depth: int
  lru_width: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  attention_window: int
  attention_every: int
  rope_base: float
  rope_fraction: float
  attention_impl: str
  conv_width: int
  mlp_expansion: float
  embed_scale: str
  logits_soft_cap: float
  dtype: str
  scan_impl: str
  remat: str
  scan_layers: bool
  loss_chunk: int

  @classmethod
  def from_group(cls, group: Mapping[str, Any]) -> ModelConfig:
    """The `model` group's values as they are (a ConfigDict or a mapping of exactly the fields)."""
    names = [field.name for field in dataclasses.fields(cls)]
    keys = set(group.keys())
    unknown, missing = sorted(keys - set(names)), sorted(set(names) - keys)
    if unknown or missing:
      raise ConfigError(f"the model group's keys differ from ModelConfig's: unknown {unknown}, "
                        f"missing {missing}")
    return cls(**{name: group[name] for name in names})
