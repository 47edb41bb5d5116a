"""Forward-only computations of a placed model on packed batches: logits, per-token losses, and
the jitted held-out loss that training (validation loss, the mixture controller) and evaluations
(objective competence, fine-tuning curves) share.

    eval_step = make_eval_step(placed)
    with jax.set_mesh(placed.mesh):
      loss = mean_eval_loss(eval_step, params, batches)  # nats per target token

A batch holds `BATCH_KEYS` as global arrays (B x L); `loss_mask` weights each target token.
`token_losses` decodes the whole batch's float32 logits at once unless the model's
`model.loss_chunk` > 0: it then decodes that many positions of each row at a time from the final
hidden states (`chunked_loss.py`), for runs whose logits would dominate device memory.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from birdie_jax.models.chunked_loss import chunked_token_losses
from birdie_jax.models.placed import PlacedModel
from birdie_jax.parallel.sharding import axis_rules

Batch = Mapping[str, jax.Array]
BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions", "prefix_mask")


def batch_logits(placed: PlacedModel, params, batch: Batch) -> jax.Array:
  """The model's float32 logits (B x L x vocab) on a packed batch."""
  model = placed.model(params)
  with axis_rules(placed.rules):
    return model(batch["inputs"], segment_ids=batch["segment_ids"],
                 positions=batch["positions"], prefix_mask=batch["prefix_mask"])


def token_losses(placed: PlacedModel, params, batch: Batch, *,
                 loss_chunk: int | None = None) -> jax.Array:
  """Per-token cross-entropy (float32, B x L); zero where `loss_mask` is 0.

  `loss_chunk` (default: the model's `model.loss_chunk`) > 0 computes it from the final hidden
  states that many positions of each row at a time (`chunked_loss.py`: equal up to float
  rounding, never the whole batch's logits); 0 decodes all logits at once."""
  model = placed.model(params)
  chunk = model.loss_chunk if loss_chunk is None else loss_chunk
  if chunk > 0:
    with axis_rules(placed.rules):
      hidden = model.features(batch["inputs"], segment_ids=batch["segment_ids"],
                              positions=batch["positions"], prefix_mask=batch["prefix_mask"])
    graphdef, embed = nnx.split(model.embed)
    return chunked_token_losses(lambda embed, x: nnx.merge(graphdef, embed).decode(x), embed,
                                hidden, batch["targets"], batch["loss_mask"], chunk=chunk,
                                rules=placed.rules)
  logits = batch_logits(placed, params, batch)
  with jax.named_scope("cross_entropy"):  # `bench profile`'s category (metadata only)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return ce * batch["loss_mask"]


def make_eval_step(placed: PlacedModel) -> Callable[[dict, Batch], dict]:
  """A jitted step returning the summed loss and target-token count of one batch."""

  def step(params, batch: Batch) -> dict:
    losses = token_losses(placed, params, batch)
    return {"loss_sum": jnp.sum(losses), "count": jnp.sum(batch["loss_mask"])}

  return jax.jit(step, in_shardings=(placed.param_shardings, None))


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
