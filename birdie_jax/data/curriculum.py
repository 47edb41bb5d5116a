"""Binds a curriculum (objectives.grid) to a tokenizer's reserved ids: the training mixture."""
from __future__ import annotations

from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.objectives.grid import build_curriculum
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.objectives.mixture import SpecialIds


def objective_ids(tokenizer: Tokenizer) -> SpecialIds:
  """The paradigm, sentinel and marker ids the objectives write."""
  return SpecialIds(
      paradigms={name: tokenizer.special_id(token)
                 for name, token in special_tokens.PARADIGMS.items()},
      sentinels=tokenizer.sentinel_ids,
      markers={name: tokenizer.special_id(name) for name in special_tokens.MARKERS})


def make_mixture(tokenizer: Tokenizer, *, curriculum: str, seq_len: int, length_scale: float = 0.0,
                 class_weights: str = "") -> Mixture:
  """The mixture of `curriculum` (see objectives.grid) at its starting weights, for this tokenizer.

  Raises:
    ConfigError: unknown curriculum, bad class weights, or configurations that cannot fit seq_len.
  """
  return Mixture(build_curriculum(curriculum, seq_len=seq_len, length_scale=length_scale,
                                  class_weights=class_weights,
                                  num_sentinels=special_tokens.NUM_SENTINELS),
                 objective_ids(tokenizer))
