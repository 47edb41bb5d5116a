"""`ControllerState`: everything the controller knows, as one pytree of arrays.

History row t holds the validation losses at an evaluation (`losses[t]`), the mixture trained on
from that evaluation to the next (`actions[t]`), the reward observed over that interval
(`rewards[t]`) and the evaluation's step (`steps[t]`). Rows `count..capacity-1` are zeros. When the
buffers are full the oldest row slides out. The state is plain arrays (no Python objects), so it
goes through `jax.jit`, Orbax `StandardSave` / `StandardRestore` and `jax.device_get` unchanged.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from flax import struct


@struct.dataclass
class ControllerState:
  """The controller's functional state (see the module doc for the history layout)."""

  params: Any  # reward-model params (`reward_model.init_params`)
  opt_state: optax.OptState  # the reward model's AdamW state; persists across updates
  losses: jax.Array  # f32[capacity, n]: validation losses at the start of each interval
  actions: jax.Array  # f32[capacity, n]: the mixture used during each interval
  rewards: jax.Array  # f32[capacity, n]: the reward observed over each interval
  steps: jax.Array  # i32[capacity]: the step at which each interval began
  count: jax.Array  # i32[]: filled history rows
  action: jax.Array  # f32[n]: the current mixture (what the data pipeline samples from)
  prev_losses: jax.Array  # f32[n]: the losses of the latest evaluation
  prev_step: jax.Array  # i32[]: the step of the latest evaluation (-1 before the first)
  num_updates: jax.Array  # i32[]: evaluations seen (the first only records losses)
  key: jax.Array  # u32[2]: the controller's PRNG key, split at every update
  fit_losses: jax.Array  # f32[train_steps]: the reward model's MSE at each step of the last fit
  predicted_reward: jax.Array  # f32[]: the predicted total reward of the chosen mixture
  explored: jax.Array  # bool[]: whether the current mixture is an exploring one


def mixture_weights(state: ControllerState) -> np.ndarray:
  """The current mixture (`state.action`) as float64 weights summing to 1, the form the data
  pipeline samples from: a pure function of the state, so the state is the mixture's one copy."""
  weights = np.maximum(np.asarray(jax.device_get(state.action), np.float64), 0.0)
  return weights / weights.sum()
