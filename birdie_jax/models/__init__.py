"""Model families, selected by `model.family` (shapes by `model.preset` or the shape keys).

    model = build_model(run_config.model, vocab_size, rngs=nnx.Rngs(seed))   # or a ModelConfig
    param_count(run_config.model, vocab_size)   # the same model's size, analytically

Both resolve the config's `model` group into the typed `ModelConfig` (`presets.resolve`) that
every model class takes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import nnx

from birdie_jax.models import presets
from birdie_jax.models.gated_ssm import GatedSSMLM
from birdie_jax.models.griffin import GriffinLM
from birdie_jax.models.hawk import HawkLM
from birdie_jax.models.lm import LanguageModel
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.models.transformer import TransformerLM

_FAMILIES: dict[str, type[LanguageModel]] = {
    "hawk": HawkLM, "gated_ssm": GatedSSMLM, "griffin": GriffinLM, "transformer": TransformerLM}


def build_model(config: ModelConfig | Mapping[str, Any], vocab_size: int, *,
                rngs: nnx.Rngs) -> LanguageModel:
  """Instantiates `config.family` (without eager sharding: the trainer places params itself).

  `config` is a ModelConfig or a config's `model` group (a ConfigDict), resolved here."""
  config = presets.resolve(config)
  with nnx.use_eager_sharding(False):
    return _FAMILIES[config.family](config, vocab_size, rngs=rngs)


def param_count(config: ModelConfig | Mapping[str, Any], vocab_size: int) -> int:
  """The analytic parameter count of the model `config` (a ModelConfig or `model` group)
  describes."""
  config = presets.resolve(config)
  return _FAMILIES[config.family].param_count(config, vocab_size)
