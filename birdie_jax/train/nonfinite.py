"""Non-finite values: the check the train step and checkpoints use, and the rollback policy.

A step whose loss, gradient norm or updated state holds a NaN or Inf is skipped (see
`train.step`): params and optimizer state stay as they were and the step counter advances, so the
bad batch is dropped and the data position still matches the step. After
`train.max_nonfinite_in_a_row` skipped steps in a row the model state is rolled back to the last
checkpoint while the data goes on (the batches since that checkpoint are not replayed); if the
streak comes back before a newer checkpoint exists, rolling back did not help and training stops
(as it does when there is no checkpoint yet). No checkpoint is written during a streak.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from birdie_jax.errors import TrainingError


def all_finite(tree: Any) -> jax.Array:
  """A traceable scalar bool: every floating-point leaf of `tree` is free of NaN and Inf."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


_all_finite = jax.jit(all_finite)


def is_finite(tree: Any) -> bool:
  """`all_finite` of a tree of (possibly sharded) arrays, on the host."""
  return bool(jax.device_get(_all_finite(tree)))


class NonFiniteGuard:
  """Counts skipped (non-finite) steps in a row and picks the checkpoint to roll back to."""

  def __init__(self, max_in_a_row: int):
    self.max_in_a_row = max_in_a_row
    self.in_a_row = 0
    self._rolled_back_to: int | None = None

  def observe(self, skipped: bool) -> bool:
    """Records one step; True when the streak has reached `max_in_a_row` (time to roll back)."""
    self.in_a_row = self.in_a_row + 1 if skipped else 0
    return self.in_a_row >= self.max_in_a_row

  def rollback_target(self, latest_checkpoint: int | None, step: int) -> int:
    """The checkpoint to roll back to at `step`, and the streak restarts from there.

    Raises:
      TrainingError: no checkpoint exists yet, or the run was already rolled back to the latest
        one and diverged again before writing a newer one.
    """
    streak = f"{self.in_a_row} non-finite steps in a row up to step {step}"
    advice = "lower train.learning_rate or check the data"
    if latest_checkpoint is None:
      raise TrainingError(f"{streak}, before the first checkpoint: {advice}")
    if latest_checkpoint == self._rolled_back_to:
      raise TrainingError(f"{streak}, again after rolling back to checkpoint "
                          f"{latest_checkpoint}: {advice}")
    self._rolled_back_to = latest_checkpoint
    self.in_a_row = 0
    return latest_checkpoint
