"""A run's curriculum (objectives.grid), built once, and bound to a tokenizer's reserved ids.

`named_curriculum` is the one builder, cached: config validation and the evaluations
(`evals.runner`) reach it through `run_curriculum(config)`, the training mixture through
`make_mixture`, and the same arguments give the same read-only `Curriculum` object, so a run builds
its curriculum once.
"""
from __future__ import annotations

import functools

from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.objectives.grid import build_curriculum
from birdie_jax.objectives.grid import Curriculum
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.objectives.mixture import SpecialIds


def objective_ids(tokenizer: Tokenizer) -> SpecialIds:
  """The paradigm, sentinel and marker ids the objectives write."""
  return SpecialIds(
      paradigms={name: tokenizer.special_id(token)
                 for name, token in special_tokens.PARADIGMS.items()},
      sentinels=tokenizer.sentinel_ids,
      markers={name: tokenizer.special_id(name) for name in special_tokens.MARKERS})


@functools.lru_cache(maxsize=16)
def named_curriculum(name: str, seq_len: int, length_scale: float = 0.0,
                     class_weights: str = "") -> Curriculum:
  """Curriculum `name` for rows of `seq_len` tokens (with every tokenizer's sentinel count), built
  once per distinct arguments (its weights are read-only: every caller shares the object).

  Raises:
    ConfigError: unknown curriculum, bad class weights, or configurations that cannot fit seq_len.
  """
  built = build_curriculum(name, seq_len=seq_len, length_scale=length_scale,
                           class_weights=class_weights, num_sentinels=special_tokens.NUM_SENTINELS)
  built.weights.setflags(write=False)
  return built


def run_curriculum(config) -> Curriculum:
  """The curriculum a run's config names (keys `curriculum`, `train.seq_len`,
  `data.length_scale`, `data.class_weights`); ConfigError as `named_curriculum`."""
  return named_curriculum(config.curriculum, config.train.seq_len, config.data.length_scale,
                          config.data.class_weights)


def make_mixture(tokenizer: Tokenizer, *, curriculum: str, seq_len: int, length_scale: float = 0.0,
                 class_weights: str = "") -> Mixture:
  """The mixture of `curriculum` (see objectives.grid) at its starting weights, for this tokenizer.

  Raises:
    ConfigError: unknown curriculum, bad class weights, or configurations that cannot fit seq_len.
  """
  return Mixture(named_curriculum(curriculum, seq_len, length_scale, class_weights),
                 objective_ids(tokenizer))
