"""Model families, selected by `model.family` (shapes by `model.preset` or the shape keys)."""
from __future__ import annotations

import ml_collections
from flax import nnx

from birdie_jax.models import presets
from birdie_jax.models.gated_ssm import GatedSSMLM
from birdie_jax.models.griffin import GriffinLM
from birdie_jax.models.hawk import HawkLM
from birdie_jax.models.lm import LanguageModel
from birdie_jax.models.transformer import TransformerLM

_FAMILIES: dict[str, type[LanguageModel]] = {
    "hawk": HawkLM, "gated_ssm": GatedSSMLM, "griffin": GriffinLM, "transformer": TransformerLM}


def build_model(cfg: ml_collections.ConfigDict, vocab_size: int, *,
                rngs: nnx.Rngs) -> LanguageModel:
  """Instantiates `cfg.family` (without eager sharding: the trainer places params itself)."""
  cfg = presets.resolve(cfg)
  with nnx.use_eager_sharding(False):
    return _FAMILIES[cfg.family](cfg, vocab_size, rngs=rngs)


def param_count(cfg: ml_collections.ConfigDict, vocab_size: int) -> int:
  """The analytic parameter count of the model `cfg` (a `config.model`) describes."""
  cfg = presets.resolve(cfg)
  return _FAMILIES[cfg.family].param_count(cfg, vocab_size)
