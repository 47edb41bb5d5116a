"""The `eval` config section: every key, its default and a one-line comment, and its validation."""
from __future__ import annotations

import ml_collections

from birdie_jax.data import special_tokens
from birdie_jax.errors import ConfigError
from birdie_jax.evals import tasks

LAYOUTS = ("auto", "prefix", "continuation")


def default_settings() -> ml_collections.ConfigDict:
  """The evaluation keys at their defaults (all tasks, off inside training)."""
  c = ml_collections.ConfigDict()
  c.tasks = ",".join(tasks.NAMES)  # comma-separated tasks (birdie_jax/evals/tasks.py)
  c.every = 0                # training steps between evaluations inside training (0: off)
  c.examples = 32            # examples per difficulty of each task
  c.batch_size = 16          # rows per forward pass and per generation batch
  c.seq_len = 0              # context the examples fill and fit (0: train.seq_len)
  c.max_new_tokens = 0       # cap on generated tokens (0: a task's longest answer, to a power of 2)
  c.layout = "auto"          # auto (prefix unless curriculum ntp on a causal model) | prefix |
                             # continuation: how prompts are laid out (models/decoding.py)
  c.paradigm = "prefix_lm"   # objective class whose paradigm token starts prefix-layout prompts
                             # of the tasks without their own ('': none)
  c.seed = 0                 # seeds the examples (the same ones at every evaluation)
  return c


def _int(settings: ml_collections.ConfigDict, key: str, minimum: int) -> int:
  value = settings[key]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"eval.{key} must be an integer >= {minimum}, got {value!r}")
  return value


def validate_settings(settings: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key of an `eval` section (unknown or missing keys,
  unknown tasks, layouts or paradigms, out-of-range numbers)."""
  reference = default_settings()
  unknown = sorted(set(settings.keys()) - set(reference.keys()))
  if unknown:
    raise ConfigError(f"unknown config key eval.{unknown[0]}")
  missing = sorted(set(reference.keys()) - set(settings.keys()))
  if missing:
    raise ConfigError(f"config is missing key eval.{missing[0]}")
  if not isinstance(settings.tasks, str):
    raise ConfigError(f"eval.tasks must be a comma-separated string, got {settings.tasks!r}")
  tasks.parse_names(settings.tasks)
  _int(settings, "every", 0)
  _int(settings, "examples", 1)
  _int(settings, "batch_size", 1)
  _int(settings, "seq_len", 0)
  _int(settings, "max_new_tokens", 0)
  _int(settings, "seed", 0)
  if settings.layout not in LAYOUTS:
    raise ConfigError(f"eval.layout must be one of {LAYOUTS}, got {settings.layout!r}")
  if settings.paradigm and settings.paradigm not in special_tokens.PARADIGMS:
    raise ConfigError(f"eval.paradigm must be '' or one of {tuple(special_tokens.PARADIGMS)}, "
                      f"got {settings.paradigm!r}")
