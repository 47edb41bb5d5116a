"""The jitted train and eval steps (pure functions of the state and a batch)."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from birdie_jax.parallel.sharding import axis_rules
from birdie_jax.train.nonfinite import all_finite
from birdie_jax.train.optimizer import learning_rate_schedule
from birdie_jax.train.state import TrainSetup, TrainState

Batch = Mapping[str, jax.Array]
BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions", "prefix_mask")


def batch_logits(setup: TrainSetup, params, batch: Batch) -> jax.Array:
  """The model's float32 logits (B x L x vocab) on a packed batch."""
  model = setup.model(params)
  with axis_rules(setup.rules):
    return model(batch["inputs"], segment_ids=batch["segment_ids"],
                 positions=batch["positions"], prefix_mask=batch["prefix_mask"])


def token_losses(setup: TrainSetup, params, batch: Batch) -> jax.Array:
  """Per-token cross-entropy (float32, B x L); zero where `loss_mask` is 0."""
  logits = batch_logits(setup, params, batch)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  return ce * batch["loss_mask"]


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


def make_eval_step(setup: TrainSetup) -> Callable[[dict, Batch], dict]:
  """A jitted step returning the summed loss and target-token count of one batch."""

  def step(params, batch: Batch) -> dict:
    losses = token_losses(setup, params, batch)
    return {"loss_sum": jnp.sum(losses), "count": jnp.sum(batch["loss_mask"])}

  return jax.jit(step, in_shardings=(setup.state_shardings.params, None))


def mean_eval_loss(eval_step: Callable[[dict, Batch], dict], params, batches: list[Batch]) -> float:
  """Mean loss per target token over `batches` (global arrays), one batch in flight at a time:
  many concurrent sharded programs can exhaust the CPU runtime's threads while their collectives
  wait on each other."""
  total, count = 0.0, 0.0
  for batch in batches:
    out = jax.device_get(eval_step(params, batch))
    total += float(out["loss_sum"])
    count += float(out["count"])
  return total / max(count, 1.0)
