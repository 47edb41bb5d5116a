"""When the controller evaluates, when it takes control, and how often it explores.

Evaluation steps (paper §3.3): 10, 50, 250, 500, 1000, 1500, 2000, then every `eval_every` (1000 in
the paper: 37 evaluations in 32k steps). The mixture stays uniform per class until the evaluation at
step 250, which is the first whose mixture the controller chooses.

Short runs keep this shape through a factor `scale` applied to every step and to `eval_every`
(`scale` 0 picks `min(1, total_steps / 32000)`, the paper's run length). Each scaled step is rounded
half up; a step that would not come after the previous evaluation moves to the step after it, and
every step is at least 1. So all seven early evaluations survive at any scale, tiny scales pressing
them onto consecutive steps: scale 0.01 gives 1, 2, 3, 5, 10, 15, 20, then every 10 steps, with
control from step 3. Evaluations after `total_steps` are dropped.

Exploration (the original agent's `make_cosine_decay_schedule`, indexed by training progress
p = step / total_steps as the agent intended; it indexed by update count, so it always explored):
probability 1 for p < 0.05 (the "cook" phase), 0.5 for 0.05 <= p < 0.10, then a half cosine from 0.5
at p = 0.10 down to 0.25 at p = 0.45 (with the agent's integer step counts), and 0.25 after.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from birdie_jax.errors import ConfigError

PAPER_EVAL_STEPS = (10, 50, 250, 500, 1000, 1500, 2000)
PAPER_CONTROL_INDEX = 2  # the evaluation at step 250 is the first that sets the mixture
PAPER_TOTAL_STEPS = 32_000

COOK_FRACTION = 0.05  # explore with probability COOK_PROBABILITY before this share of training
COOK_PROBABILITY = 1.0
DECAY_START_FRACTION = 0.10  # the cosine starts here at EXPLORE_MAX ...
DECAY_END_FRACTION = 0.45  # ... and reaches EXPLORE_MIN here
EXPLORE_MAX = 0.50
EXPLORE_MIN = 0.25


@dataclasses.dataclass(frozen=True)
class EvalSchedule:
  """The evaluation steps of a run and the step from which the controller sets the mixture."""

  steps: tuple[int, ...]
  control_start: int

  def is_eval_step(self, step: int) -> bool:
    """Whether the controller should be updated after training step `step`."""
    return step in self.steps


def _round_half_up(value: float) -> int:
  return int(math.floor(value + 0.5))


def resolve_scale(scale: float, total_steps: int) -> float:
  """`scale`, or for 0 the run's length relative to the paper's 32k steps (at most 1)."""
  if scale < 0:
    raise ConfigError(f"controller.schedule_scale must be >= 0, got {scale}")
  return scale or min(1.0, total_steps / PAPER_TOTAL_STEPS)


def make_schedule(total_steps: int, *, eval_every: int = 1000, scale: float = 0.0) -> EvalSchedule:
  """The paper's evaluation steps times `scale` (0: auto) up to `total_steps` (see module doc)."""
  if eval_every < 1:
    raise ConfigError(f"controller.eval_every must be positive, got {eval_every}")
  scale = resolve_scale(scale, total_steps)
  steps = []
  for paper_step in PAPER_EVAL_STEPS:
    steps.append(max(_round_half_up(paper_step * scale), steps[-1] + 1 if steps else 1))
  control_start = steps[PAPER_CONTROL_INDEX]
  every = max(1, _round_half_up(eval_every * scale))
  while steps[-1] + every <= total_steps:
    steps.append(steps[-1] + every)
  return EvalSchedule(tuple(s for s in steps if s <= total_steps), control_start)


def explore_probability(step: jax.Array, total_steps: int) -> jax.Array:
  """The probability that the evaluation at `step` of a `total_steps` run explores."""
  cook = int(total_steps * COOK_FRACTION)
  start = int(total_steps * DECAY_START_FRACTION)
  length = max(1, int(total_steps * DECAY_END_FRACTION) - 1 - start)
  progress = jnp.clip(step - start, 0, length) / length
  amplitude = (EXPLORE_MAX - EXPLORE_MIN) / 2
  decayed = EXPLORE_MIN + amplitude + amplitude * jnp.cos(jnp.pi * progress)
  return jnp.where(step < cook, COOK_PROBABILITY, decayed)
