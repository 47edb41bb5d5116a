"""One lab point's models, every learning rate and seed at once: R replicas of one architecture
trained in one compiled step (`jax.vmap` over stacked params, optimizer states and learning rates).

Zoology trains a point's runs one by one; here replica r = (learning rate i, seed j) is row r of
every parameter, so a GPU sweeps a whole point with one compile and full batches of work. Replicas
that share a seed share their initial params and data order (only the learning rate differs), so
the LR comparison is paired. Each replica draws its own batch: row indices (steps, R, batch) come
from the host (`batch_indices`: a permutation of the training pool per (seed, epoch), so a resumed
point continues with exactly the batches it would have seen), and the step gathers them from the
pool on the device.

Loss and accuracy are computed only at the scored answer positions (`score_positions`): the
logits are (R, batch, scored, vocab) instead of (R, batch, length, vocab), which at Zoology's
8192 ids is what made the lab fit (MQAR 256 tokens, 12 replicas x 64 rows: 0.2 GB of logits
instead of 6.4 GB).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from birdie_jax.models import build_model
from birdie_jax.models.layers import count_params
from birdie_jax.train.optimizer import weight_decay_mask

Rows = Mapping[str, jax.Array]  # tasks.rows' arrays, on the device


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """How a point trains (the lab settings' train keys)."""
  steps: int
  batch_size: int
  warmup_fraction: float
  end_lr_ratio: float
  weight_decay: float
  b1: float
  b2: float
  grad_clip: float


def schedule(spec: TrainSpec, peak: jax.Array) -> optax.Schedule:
  """Linear warm-up to `peak`, cosine to `peak * end_lr_ratio` at `spec.steps`. The shape is
  built at peak 1 and scaled, so `peak` may be a traced per-replica value."""
  warmup = max(1, int(spec.warmup_fraction * spec.steps))
  unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(spec.steps, warmup + 1),
                                            spec.end_lr_ratio)
  return lambda count: peak * unit(count)


def optimizer(spec: TrainSpec, peak: jax.Array) -> optax.GradientTransformation:
  """Clipped AdamW with the schedule above (decay masked as in pre-training)."""
  return optax.chain(
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(schedule(spec, peak), b1=spec.b1, b2=spec.b2, weight_decay=spec.weight_decay,
                  mask=weight_decay_mask))


def batch_indices(pool: int, batch: int, seeds: Sequence[int], start: int,
                  count: int) -> np.ndarray:
  """Row indices (count, R, batch) for steps start..start+count-1: replica r reads the pool in
  the order of permutation (seeds[r], epoch), epoch after epoch."""
  out = np.empty((count, len(seeds), batch), np.int32)
  for r, seed in enumerate(seeds):
    first, last = start * batch, (start + count) * batch
    epochs = range(first // pool, (last - 1) // pool + 1)
    order = np.concatenate([np.random.default_rng([seed, e]).permutation(pool) for e in epochs])
    out[:, r] = order[first - epochs[0] * pool:last - epochs[0] * pool].reshape(count, batch)
  return out


class Replicas:
  """R replicas of one model, trained and scored together (module docstring)."""

  def __init__(self, model_cfg: ml_collections.ConfigDict, vocab_size: int, spec: TrainSpec,
               learning_rates: Sequence[float], seeds: Sequence[int]):
    if len(learning_rates) != len(seeds):
      raise ValueError("one learning rate and one seed per replica")
    self.model_cfg, self.vocab_size, self.spec = model_cfg, vocab_size, spec
    self.learning_rates = jnp.asarray(learning_rates, jnp.float32)
    self.seeds = tuple(int(s) for s in seeds)
    self.graphdef, abstract = nnx.split(nnx.eval_shape(lambda: self._build(0)))
    self.num_params = count_params(nnx.to_pure_dict(abstract))

  def _build(self, key) -> nnx.Module:
    return build_model(self.model_cfg, self.vocab_size, rngs=nnx.Rngs(key))

  def init(self):
    """Stacked (params, optimizer state) of every replica; a seed's replicas start alike."""

    def one(key):
      params = nnx.to_pure_dict(nnx.split(self._build(key))[1])
      return params, optimizer(self.spec, 1.0).init(params)

    keys = jnp.stack([jax.random.key(s) for s in self.seeds])
    return jax.jit(jax.vmap(one))(keys)

  def _scores(self, params, batch: Rows) -> jax.Array:
    """Logits (B, S, V) at the scored positions of one replica."""
    model = nnx.merge(self.graphdef, params)
    size, length = batch["inputs"].shape
    h = model.features(batch["inputs"], segment_ids=batch["segment_ids"],
                       positions=jnp.broadcast_to(jnp.arange(length), (size, length)),
                       prefix_mask=batch["prefix_mask"])
    picked = jnp.take_along_axis(h, batch["score_positions"][..., None], axis=1)
    return model.embed.decode(picked)

  def _loss(self, params, batch):
    ce = optax.softmax_cross_entropy_with_integer_labels(self._scores(params, batch),
                                                         batch["score_targets"])
    weights = batch["score_weights"]
    return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  def _step(self, params, opt_state, lr, batch):
    loss, grads = jax.value_and_grad(self._loss)(params, batch)
    updates, opt_state = optimizer(self.spec, lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
  def train(self, state, pool: Rows, indices: jax.Array):
    """`state` after one step per row of `indices` (steps, R, batch); also the losses (steps, R)."""

    def one_step(carry, idx):
      params, opt_state = carry
      batch = jax.tree.map(lambda a: a[idx], pool)  # (R, batch, ...)
      params, opt_state, loss = jax.vmap(self._step)(params, opt_state, self.learning_rates,
                                                     batch)
      return (params, opt_state), loss

    return jax.lax.scan(one_step, state, indices)

  @functools.partial(jax.jit, static_argnums=0)
  def _correct(self, params, batch: Rows) -> jax.Array:
    """(R, B, S) booleans: the argmax equals the answer at each scored position."""
    return jax.vmap(lambda p: jnp.argmax(self._scores(p, batch), -1) == batch["score_targets"]
                    )(params)

  def evaluate(self, params, rows: Rows, batch_size: int) -> dict[str, np.ndarray]:
    """Per replica: teacher-forced token accuracy and exact match over `rows` (R,)."""
    count = rows["inputs"].shape[0]
    correct = []
    for start in range(0, count, batch_size):
      stop = min(count, start + batch_size)
      batch = {k: v[start:stop] for k, v in rows.items()}
      correct.append(np.asarray(jax.device_get(self._correct(params, batch))))
    correct = np.concatenate(correct, axis=1)  # (R, count, S)
    scored = np.asarray(rows["score_weights"]) > 0  # (count, S)
    accuracy = (correct & scored).sum(axis=(1, 2)) / scored.sum()
    return {"accuracy": accuracy, "exact_match": (correct | ~scored).all(-1).mean(1)}


def decode_state_size(model_cfg: ml_collections.ConfigDict, vocab_size: int, length: int) -> int:
  """Floats a model keeps per sequence to continue after `length` tokens (every layer's
  recurrent state, conv window and KV cache): the x axis of Zoology's plots."""
  model = nnx.eval_shape(lambda: build_model(model_cfg, vocab_size, rngs=nnx.Rngs(0)))
  ids = jax.ShapeDtypeStruct((1, length), jnp.int32)

  def prefill(m, x):
    return m.prefill(x, segment_ids=jnp.ones_like(x), positions=jnp.zeros_like(x),
                     prefix_mask=jnp.zeros(x.shape, bool), cache_len=length)[1]["blocks"]

  cache = nnx.eval_shape(prefill, model, ids)
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(cache)
                 if jnp.issubdtype(leaf.dtype, jnp.floating)))
