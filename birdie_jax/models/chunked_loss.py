"""Per-token cross-entropy from the final hidden states, a chunk of positions at a time, so the
float32 logits of the whole batch (B x L x vocab) never exist, neither in the forward pass nor as
a residual kept for the backward pass.

    hidden = model.features(inputs, segment_ids=..., positions=..., prefix_mask=...)  # (B, L, D)
    graphdef, embed = nnx.split(model.embed)
    decode = lambda embed, x: nnx.merge(graphdef, embed).decode(x)  # the model's own decode
    losses = chunked_token_losses(decode, embed, hidden, targets, loss_mask, chunk=256,
                                  rules=placed.rules)

`models.forward.token_losses` takes this path when `model.loss_chunk` > 0 (0: the plain path, the
whole batch's logits then optax's cross-entropy). Training, the held-out loss and every evaluation
go through `token_losses`, so they all follow the key.

Layout. Under a mesh, each device works on its own rows and positions: a `jax.shard_map` manual
over the mesh axes that split the batch and the length (`data`, `fsdp`, `sequence` under the
default rules), automatic over the rest (the vocabulary split over `tensor` stays GSPMD's: the
logsumexp and the target's logit become small all-reduces of B x chunk). The embedding enters
replicated over the manual axes (the FSDP all-gather, once) and is cast to varying before the
loop, so each device sums its own table gradient over the chunks and the sum over devices is one
all-reduce after the loop, as in the plain path, not one per chunk. Within a device, chunk i holds
the local positions p with p % n == i (n = ceil(L_local / chunk) chunks of ceil(L_local / n) <=
chunk positions, padded with masked positions). `jax.lax.scan` runs the chunks in turn; its body is
`jax.checkpoint`ed, so the backward pass keeps only the hidden states (B x L x D, which the model
holds anyway) and recomputes one chunk's logits at a time. The loss's peak memory per device: one
chunk's float32 logits, B_local x chunk x V_local, a few times over (logits, softmax, gradient).

Numerics: each chunk's logits are the plain path's (`decode` is the model's own `Embedder.decode`:
the matmul in the compute dtype accumulating in float32, float32 logits, the soft cap); per token
the loss is `logsumexp(logits) - logits[target]` in float32, as optax's
`softmax_cross_entropy_with_integer_labels` computes it (the target's logit picked by an exact
one-hot select, which partitions over a split vocabulary where a gather would not). Losses equal
the plain path's up to how XLA tiles the matmul; the table's gradient is a float32 sum over chunks
rather than one matmul (in bfloat16 compute each chunk's part is rounded to bfloat16, not the
whole batch's: slightly more accurate). Cost: the unembedding matmul runs once more (the backward
pass recomputes the logits).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from birdie_jax.parallel.sharding import Rules, activation_spec, axis_rules

Decode = Callable[[Any, jax.Array], jax.Array]  # (params, (B, w, D) hidden) -> (B, w, V) float32


def chunk_layout(length: int, chunk: int) -> tuple[int, int]:
  """(chunks n, positions per chunk w) for rows of `length` with at most `chunk` per chunk:
  n = ceil(length / chunk), w = ceil(length / n), so n * w - length < n positions are padding."""
  if chunk <= 0:
    raise ValueError(f"chunk must be positive, got {chunk}")
  n = -(-length // chunk)
  return n, -(-length // n)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token cross-entropy of float32 logits (..., V) and integer targets (...): optax's
  `logsumexp(logits) - logits[target]`, the target's logit taken by an exact one-hot select."""
  vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  picked = jnp.sum(jnp.where(vocab == targets[..., None], logits, 0.0), axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - picked


def _scan_chunks(decode: Decode, params, hidden: jax.Array, targets: jax.Array,
                 loss_mask: jax.Array, chunk: int) -> jax.Array:
  """The losses of (local) rows, `chunk` positions of each at a time (see the module docstring)."""
  batch, length = hidden.shape[:2]
  n, w = chunk_layout(length, chunk)
  pad = n * w - length

  def chunks(x: jax.Array) -> jax.Array:  # (B, L, ...) -> (n, B, w, ...): chunk i = p % n == i
    x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(batch, w, n, *x.shape[2:]), 2, 0)

  @jax.checkpoint  # the backward pass recomputes a chunk's logits: nothing of size V is kept
  def chunk_losses(params, x, t, m):
    logits = decode(params, x)
    with jax.named_scope("cross_entropy"):  # `bench profile`'s category; the matmul is not in it
      return cross_entropy(logits, t) * m

  def body(carry, xs):
    return carry, chunk_losses(params, *xs)

  xs = (chunks(hidden), chunks(targets.astype(jnp.int32)), chunks(loss_mask))
  _, losses = jax.lax.scan(body, None, xs)  # (n, B, w)
  return jnp.moveaxis(losses, 0, 2).reshape(batch, n * w)[:, :length]


def _axes(entry) -> tuple[str, ...]:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _without(rules: Rules, axes: tuple[str, ...]) -> tuple:
  """The rules table with `axes` (manual inside the shard_map) taken out of every entry."""
  return tuple((name, tuple(a for a in _axes(target) if a not in axes)) for name, target in rules)


def chunked_token_losses(decode: Decode, params, hidden: jax.Array, targets: jax.Array,
                         loss_mask: jax.Array, *, chunk: int,
                         rules: Rules | None = None) -> jax.Array:
  """Per-token cross-entropy (float32, B x L), zero where `loss_mask` is 0.

  Args:
    decode: (params, (B, w, D) hidden states) -> float32 logits (B, w, V); differentiable in
      `params` (the tied embedding: its gradient flows).
    params: what `decode` reads (a pytree; the model's embedding `nnx.State`).
    hidden: the final hidden states (B, L, D), in the compute dtype.
    targets: integer targets (B, L); loss_mask: their weights (B, L).
    chunk: at most this many positions of each (local) row are decoded at once.
    rules: the logical-axis rules the model runs under (`PlacedModel.rules`); under a mesh, the
      mesh axes they give the batch and length are the shard_map's manual axes. None: no
      layout of its own (one device, or whatever rules the caller made current).
  """
  mask = jnp.asarray(loss_mask)
  if rules is None:
    return _scan_chunks(decode, params, hidden, targets, mask, chunk)
  with axis_rules(rules):
    spec = activation_spec(("batch", "length"), hidden.shape[:2])
    mesh = jax.sharding.get_abstract_mesh()
    rows, positions = (_axes(spec[0]), _axes(spec[1])) if spec is not None else ((), ())
    if math.prod(mesh.shape[a] for a in rows + positions) == 1:
      return _scan_chunks(decode, params, hidden, targets, mask, chunk)
  manual = rows + positions
  local_rules = _without(rules, manual)
  layout = PartitionSpec(rows or None, positions or None)

  def local(params, hidden, targets, mask):
    # Varying before the loop: the table gradient is summed per device over the chunks and
    # all-reduced once, where this cast transposes, instead of once per chunk inside the loop.
    params = jax.lax.pcast(params, manual, to="varying")
    with axis_rules(local_rules):
      return _scan_chunks(decode, params, hidden, targets, mask, chunk)

  return jax.shard_map(local, in_specs=(PartitionSpec(), layout, layout, layout),
                       out_specs=layout, axis_names=frozenset(manual))(
                           params, hidden, targets, mask)
