"""The jitted train step (a pure function of the state and a batch). The forward-only pieces it
shares with evaluations (logits, per-token losses, the held-out eval step) are `models.forward`."""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from birdie_jax.models.forward import Batch, token_losses
from birdie_jax.train.nonfinite import all_finite
from birdie_jax.train.optimizer import learning_rate_schedule
from birdie_jax.train.state import TrainSetup, TrainState


def mean_loss(setup: TrainSetup, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """Mean loss over the target tokens, and their count."""
  losses = token_losses(setup, params, batch)
  count = jnp.sum(batch["loss_mask"])
  return jnp.sum(losses) / jnp.maximum(count, 1.0), count


def make_train_step(setup: TrainSetup, schedule_config) -> Callable[[TrainState, Batch],
                                                                      tuple[TrainState, dict]]:
  """A jitted step: grads, clipped AdamW update, metrics. The input state is donated.

  A step whose loss, gradient norm or new params / optimizer state hold a NaN or Inf is skipped:
  params and optimizer state are kept (so the optimizer's own count, which drives the learning-rate
  schedule, counts applied updates only), while `step` and `rng` advance; the metric
  `nonfinite_skipped` is then 1.
  """
  schedule = learning_rate_schedule(schedule_config)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    (loss, count), grads = jax.value_and_grad(
        lambda p: mean_loss(setup, p, batch), has_aux=True)(state.params)
    with jax.named_scope("optimizer"):  # a category of `python -m birdie_jax.bench profile`
      updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      grad_norm = optax.tree.norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite((params, opt_state))
      params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                       (params, opt_state), (state.params, state.opt_state))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              rng=jax.random.key_data(
                                  jax.random.split(jax.random.wrap_key_data(state.rng))[0]))
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "target_tokens": count, "nonfinite_skipped": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  return jax.jit(step, in_shardings=(setup.state_shardings, None),
                 out_shardings=(setup.state_shardings, None), donate_argnums=0)
