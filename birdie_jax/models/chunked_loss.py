"""Per-token cross-entropy from the final hidden states, a chunk of positions at a time, so the
float32 logits of the whole batch (B x L x vocab) never exist, neither in the forward pass nor as
a residual kept for the backward pass.

    hidden = model.features(inputs, segment_ids=..., positions=..., prefix_mask=...)  # (B, L, D)
    losses = chunked_token_losses(model.embed.decode, hidden, targets, loss_mask, chunk=256)

`models.forward.token_losses` takes this path when `model.loss_chunk` > 0 (0: the plain path, the
whole batch's logits then optax's cross-entropy). Training, the held-out loss and every evaluation
go through `token_losses`, so they all follow the key.

Layout. Chunk i holds the positions p with p % n == i (n = ceil(L / chunk) chunks of
ceil(L / n) <= chunk positions each; L is padded with masked positions up to a multiple of n):
each chunk keeps the rows' `batch` sharding, and with the length split over a `sequence` mesh
axis each device still holds its own positions of every chunk (contiguous chunks would put a
whole chunk on one device). `jax.lax.scan` runs the chunks in turn; its body is
`jax.checkpoint`ed, so the backward pass stores only the hidden states (B x L x D, already kept
by the model) and recomputes one chunk's logits at a time. Peak memory for the loss: one chunk's
float32 logits, B x chunk x vocab, a few times over (logits, their softmax and gradient).

Numerics: each chunk's logits are exactly the plain path's (`decode` is the model's own
`Embedder.decode`: the matmul in the compute dtype accumulating in float32, float32 logits, the
soft cap); per token the loss is `logsumexp(logits) - logits[target]` in float32, as optax's
`softmax_cross_entropy_with_integer_labels` computes it (the target logit picked by a one-hot
select, exact, which partitions over a vocab split across a `tensor` axis where a gather would
not). The losses equal the plain path's up to how XLA tiles the matmul; the embedding table's
gradient is a sum over chunks in float32 rather than one matmul (in bfloat16 compute, a chunk's
gradient is rounded to bfloat16 instead of the whole batch's: slightly more accurate).
Cost: the unembedding matmul runs once more in the backward pass (logits recomputed).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


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


def chunked_token_losses(decode: Callable[[jax.Array], jax.Array], hidden: jax.Array,
                         targets: jax.Array, loss_mask: jax.Array, *, chunk: int) -> jax.Array:
  """Per-token cross-entropy (float32, B x L), zero where `loss_mask` is 0, from the hidden
  states `hidden` (B, L, D) and `decode`, which maps (B, w, D) to float32 logits (B, w, V).

  `chunk` bounds the positions of each row decoded at once (see the module docstring for the
  layout); `decode` may close over parameters (the tied embedding): their gradients flow."""
  batch, length, width = hidden.shape
  n, w = chunk_layout(length, chunk)
  pad = n * w - length

  def chunks(x: jax.Array) -> jax.Array:  # (B, L, ...) -> (n, B, w, ...): chunk i = p % n == i
    x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
    x = x.reshape(batch, w, n, *x.shape[2:])
    return jnp.moveaxis(x, 2, 0)

  @jax.checkpoint  # the backward pass recomputes a chunk's logits: nothing of size V is kept
  def chunk_losses(x, t, m):
    return cross_entropy(decode(x), t) * m

  def body(carry, xs):
    return carry, chunk_losses(*xs)

  mask = jnp.asarray(loss_mask)
  xs = (chunks(hidden), chunks(targets.astype(jnp.int32)), chunks(mask))
  _, losses = jax.lax.scan(body, None, xs)  # (n, B, w)
  return jnp.moveaxis(losses, 0, 2).reshape(batch, n * w)[:, :length]
