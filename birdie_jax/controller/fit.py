"""Training the reward model at each evaluation ("Grokking Birdie": a fixed number of steps).

As the original agent: full-batch MSE between predicted and observed per-configuration rewards over
all filled history rows; AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-8, decoupled weight decay 0.1 on
every parameter) after clipping the gradient's global norm to 1.0; a triangular cyclic learning rate
from lr/1000 up to lr at the middle of the update and back (PyTorch `CyclicLR` with
`step_size_up = steps / 2`), whose step count persists, so each update runs exactly one cycle; and
each step multiplies inputs and targets by independent U[1 - noise, 1 + noise] factors (0.02 in the
agent). The optimizer state lives in `ControllerState` and the model is never reset.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from birdie_jax.controller import reward_model

BASE_LR_RATIO = 1e-3  # the cycle's lowest learning rate, as a share of the peak


def cyclic_lr(peak: float, steps: int) -> optax.Schedule:
  """Triangular cycles of `steps` optimizer steps: peak / 1000 -> peak (middle) -> peak / 1000."""
  base, half = peak * BASE_LR_RATIO, steps / 2

  def schedule(count: jax.Array) -> jax.Array:
    phase = jnp.abs(jnp.mod(count, steps) / half - 1.0)
    return base + (peak - base) * jnp.maximum(0.0, 1.0 - phase)

  return schedule


class ClippedAdamWState(NamedTuple):
  """Adam's step count and moments."""
  count: jax.Array
  mu: optax.Params
  nu: optax.Params


def clipped_adamw(learning_rate: optax.Schedule, *, b1: float, b2: float, eps: float,
                  weight_decay: float, max_norm: float) -> optax.GradientTransformation:
  """`optax.chain(clip_by_global_norm(max_norm), adamw(learning_rate, ...))` in one pass per leaf.

  The same arithmetic as the chain (decoupled decay on every parameter, the schedule read at the
  count of earlier updates), written so XLA fuses the moments and the update of each leaf into one
  loop: on CPU the chain reads the reward model's 2.7M-parameter state several times a step, and
  those passes are a third of the reward model's training time.
  """

  def init(params: optax.Params) -> ClippedAdamWState:
    return ClippedAdamWState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params),
                             optax.tree.zeros_like(params))

  def update(grads: optax.Updates, state: ClippedAdamWState,
             params: optax.Params) -> tuple[optax.Updates, ClippedAdamWState]:
    norm = optax.tree.norm(grads)
    clip = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    count = optax.safe_increment(state.count)
    lr = learning_rate(state.count)
    mu_correction, nu_correction = 1 - b1**count, 1 - b2**count

    def leaf(g, mu, nu, p):
      g = g * clip
      mu = b1 * mu + (1 - b1) * g
      nu = b2 * nu + (1 - b2) * g * g
      step = (mu / mu_correction) / (jnp.sqrt(nu / nu_correction) + eps) + weight_decay * p
      return -lr * step, mu, nu

    out = jax.tree.map(leaf, grads, state.mu, state.nu, params)
    part = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)  # noqa: E731
    return part(0), ClippedAdamWState(count, part(1), part(2))

  return optax.GradientTransformation(init, update)


def make_optimizer(learning_rate: float, steps: int, weight_decay: float,
                   grad_clip: float) -> optax.GradientTransformation:
  """Clip -> AdamW with the cyclic schedule; one cycle per `steps` updates."""
  return clipped_adamw(cyclic_lr(learning_rate, steps), b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=weight_decay, max_norm=grad_clip)


def masked_mse(params: reward_model.Params, rows: jax.Array, targets: jax.Array,
               count: jax.Array) -> jax.Array:
  """Mean squared error over the first `count` of the (T, 2n) rows' (T, n) targets."""
  predictions = reward_model.apply(params, rows[None])[0]
  mask = (jnp.arange(rows.shape[0]) < count)[:, None]
  squared = jnp.where(mask, jnp.square(predictions - targets), 0.0)
  return jnp.sum(squared) / (jnp.maximum(count, 1) * targets.shape[-1])


def fit(params: reward_model.Params, opt_state: optax.OptState,
        optimizer: optax.GradientTransformation, rows: jax.Array, targets: jax.Array,
        count: jax.Array, key: jax.Array, *, steps: int,
        noise: float) -> tuple[reward_model.Params, optax.OptState, jax.Array]:
  """`steps` AdamW steps on the history; returns (params, opt_state, the MSE before each step)."""
  grad_fn = jax.value_and_grad(masked_mse)

  def step(carry, step_key):
    params, opt_state = carry
    k_rows, k_targets = jax.random.split(step_key)
    noisy_rows = rows * jax.random.uniform(k_rows, rows.shape, minval=1 - noise, maxval=1 + noise)
    noisy_targets = targets * jax.random.uniform(k_targets, targets.shape, minval=1 - noise,
                                                 maxval=1 + noise)
    loss, grads = grad_fn(params, noisy_rows, noisy_targets, count)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                             jax.random.split(key, steps))
  return params, opt_state, losses
