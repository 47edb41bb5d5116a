"""The lab's config: every key, its default and a one-line comment; parsing and validation.

A sweep is the product tasks x families x widths x layouts; each such point trains
len(learning_rates) x seeds replicas together (`replicas.py`). Lists are comma-separated strings
so any of them can be overridden on the command line (`--config.widths=64,128`).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from birdie_jax.errors import ConfigError
from birdie_jax.lab import tasks

FAMILIES = ("hawk", "gated_ssm", "griffin", "transformer")
LAYOUTS = ("causal", "bidirectional")
# Keys that only choose which points run: a resumed sweep may change them; any other key changes
# what a point is, so a workdir refuses it (its finished points were trained another way).
SELECTION_KEYS = ("tasks", "families", "widths", "layouts", "max_minutes", "workers")


def default_settings() -> ml_collections.ConfigDict:
  """All lab keys at their defaults (Zoology's MQAR set-up at GPU scale)."""
  c = ml_collections.ConfigDict()
  c.tasks = "mqar:64"          # comma-separated task:difficulty items (birdie_jax/lab/tasks.py)
  c.families = "hawk,transformer"  # model families: hawk, gated_ssm, griffin, transformer
  c.layouts = "causal,bidirectional"  # causal and/or bidirectional (prefix = context + question)
  c.widths = "64,128,256,512"  # model widths (the recurrence is as wide: lru_width = width)
  c.depth = 2                  # blocks (Zoology: 2)
  c.data_ids = 8192            # data ids of the tasks' vocabulary (Zoology: 8192)
  c.easier = 0                 # training also draws d/2, d/4, ... (this many halvings), as
                               # Zoology's MQAR trains on 4-64 pairs; val and test: d alone
                               # (toy MQAR 8 pairs, CPU: mixing 1-8 pairs reached 0.29 in 300
                               # steps where 8 alone reached 0.96; 2026-12-07)
  c.learning_rates = "1e-4,4.6e-4,2.2e-3,1e-2"  # swept per point (Zoology's logspace(-4, -2, 4))
  c.seeds = 3                  # model seeds per learning rate (init and data order)
  c.steps = 2000               # optimizer steps per replica
  c.batch_size = 64            # rows per step per replica (Zoology: 64)
  c.train_examples = 100_000   # training pool per point (Zoology: 100k), read in epochs
  c.val_examples = 512         # held-out examples that choose the learning rate
  c.test_examples = 1000       # held-out examples the chosen learning rate is reported on
  c.eval_every = 250           # steps between validation accuracies (learning curves)
  c.eval_batch_size = 256      # rows per evaluation pass
  c.chunk_steps = 50           # steps per compiled call (a lax.scan: fewer dispatches)
  c.warmup_fraction = 0.1      # linear warm-up, as a fraction of steps
  c.end_lr_ratio = 0.1         # cosine decay to learning_rate * this
  c.weight_decay = 0.1         # AdamW decoupled weight decay (Zoology: 0.1)
  c.b1 = 0.9                   # AdamW beta1
  c.b2 = 0.98                  # AdamW beta2
  c.grad_clip = 1.0            # global gradient-norm clip
  c.mlp_expansion = 2.0        # MLP hidden width = expansion * width
  c.head_width = 32            # attention head width and RG-LRU gate block (heads = width / this)
                               # (width 64 with 2 heads learned toy MQAR in 200 steps, with 1
                               # head not in 300: CPU, 2026-12-07)
  c.attention_window = 32      # griffin: local attention window (smaller than every context)
  c.bidirectional_every = 2    # SSMs: recurrent blocks 0, n, 2n, ... go bidirectional: the
                               # paper's 50% (Table 7). With every block bidirectional (1), each
                               # decodes from half its state: set disjointness 16 on CPU, Hawk
                               # w32 / w64, long-first 0.57 / 0.86 (1) vs 0.70 / 0.95 (2),
                               # short-first 0.27 / 0.55 vs 0.40 / 0.68 (runs/cpu32, cpu32-bi2)
  c.dtype = "float32"          # compute dtype (tiny models: float32 costs little)
  c.scan_impl = "associative"  # linear_scan implementation (vmapped replicas: see sweep.py)
  c.checkpoint_seconds = 60    # a running point saves its state this often (and at the deadline)
  c.max_minutes = 0.0          # stop, resumably, after this many minutes (0: no limit)
  c.workers = 1                # points trained at once, one thread each (sweep.py says when)
  return c


@dataclasses.dataclass(frozen=True)
class Point:
  """One architecture on one task: its replicas are the learning rates x seeds."""
  task: str
  difficulty: int
  family: str
  layout: str
  width: int

  @property
  def name(self) -> str:
    """A file-name-safe identifier."""
    return f"{self.task}-{self.difficulty}-{self.family}-{self.layout}-w{self.width}"


def _items(settings, key: str, cast=str) -> list:
  text = settings[key]
  if not isinstance(text, str):
    text = ",".join(str(v) for v in (text if isinstance(text, (list, tuple)) else [text]))
  try:
    out = [cast(v.strip()) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"lab.{key}: cannot read {text!r}") from None
  if not out:
    raise ConfigError(f"lab.{key} names nothing")
  return out


def task_items(settings: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  """The (task, difficulty) items of `settings.tasks`."""
  out = []
  for item in _items(settings, "tasks"):
    task, _, d = item.partition(":")
    if not d.isdigit():
      raise ConfigError(f"lab.tasks: {item!r} is not task:difficulty (e.g. mqar:64)")
    out.append((task, int(d)))
  return out


def learning_rates(settings: ml_collections.ConfigDict) -> list[float]:
  """The swept learning rates."""
  return _items(settings, "learning_rates", float)


def points(settings: ml_collections.ConfigDict) -> list[Point]:
  """Every point of the sweep, task by task (so a partial sweep has whole tasks first)."""
  return [Point(t, d, f, layout, w)
          for t, d in task_items(settings) for f in _items(settings, "families")
          for w in _items(settings, "widths", int) for layout in _items(settings, "layouts")]


def validate(settings: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first bad key."""
  unknown = sorted(set(settings.keys()) - set(default_settings().keys()))
  if unknown:
    raise ConfigError(f"unknown config key {unknown[0]}")
  for task, d in task_items(settings):
    problem = tasks.check_difficulty(task, d, settings.data_ids)
    if problem:
      raise ConfigError(problem)
  for key, allowed in (("families", FAMILIES), ("layouts", LAYOUTS)):
    bad = [v for v in _items(settings, key) if v not in allowed]
    if bad:
      raise ConfigError(f"lab.{key}: {bad[0]!r} is not one of {', '.join(allowed)}")
  for width in _items(settings, "widths", int):
    if width < 2 or width % 2:
      raise ConfigError(f"lab.widths: {width} must be even (the bidirectional split halves it)")
  if any(lr <= 0 for lr in learning_rates(settings)):
    raise ConfigError("lab.learning_rates must be > 0")
  for key in ("depth", "seeds", "steps", "batch_size", "train_examples", "val_examples",
              "test_examples", "eval_every", "eval_batch_size", "chunk_steps", "head_width",
              "attention_window", "bidirectional_every", "data_ids", "checkpoint_seconds",
              "workers"):
    if not isinstance(settings[key], int) or settings[key] < 1:
      raise ConfigError(f"lab.{key} must be an integer >= 1, got {settings[key]!r}")
  if not isinstance(settings.easier, int) or settings.easier < 0:
    raise ConfigError(f"lab.easier must be an integer >= 0, got {settings.easier!r}")
  if settings.max_minutes < 0:
    raise ConfigError(f"lab.max_minutes must be >= 0, got {settings.max_minutes}")
  if settings.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"lab.dtype must be float32 or bfloat16, got {settings.dtype!r}")
