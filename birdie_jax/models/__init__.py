"""Model families, selected by `model.family`."""
from __future__ import annotations

import ml_collections
from flax import nnx

from birdie_jax.models.hawk import HawkLM

_FAMILIES = {"hawk": HawkLM}


def build_model(cfg: ml_collections.ConfigDict, vocab_size: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """Instantiates `cfg.family` (without eager sharding: the trainer places params itself)."""
  with nnx.use_eager_sharding(False):
    return _FAMILIES[cfg.family](cfg, vocab_size, rngs=rngs)
