"""Document resets and Birdie's bidirectional channel split, shared by the recurrent layers.

A recurrent layer computes a decay `a_t` and a drive `x_t` per channel and runs
`h_t = a_t * h_{t-1} + x_t`. Packed documents are kept apart by zeroing `a_t` where no state may
flow in. In a bidirectional layer the first half of the channels scans left to right over the whole
packed row; the second half scans right to left with its decay zeroed outside the prefix and at a
document's end, so every prefix position sees the whole prefix (and the BEGIN token's drive) while
every other position keeps `h_t = x_t` and the layer stays causal there.

When the rules table splits `length` over mesh axes (sequence parallelism), each scan runs on its
shard of positions and exchanges only carries (`ops/sequence_scan.py`); the masks' one-position
shifts across shard edges are GSPMD's business.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from birdie_jax.models.remat import RECURRENCE_OUTPUT
from birdie_jax.ops.scan import linear_scan
from birdie_jax.ops.sequence_scan import sequence_parallel_scan
from birdie_jax.parallel.sharding import activation_spec


def forward_decay_mask(segment_ids: jax.Array) -> jax.Array:
  """(B, L) True where the forward state may flow in from t-1 (same non-padding document)."""
  prev = jnp.pad(segment_ids, ((0, 0), (1, 0)))[:, :-1]
  return (prev == segment_ids) & (segment_ids > 0)


def reverse_decay_mask(segment_ids: jax.Array, prefix_mask: jax.Array) -> jax.Array:
  """(B, L) True where the reverse state may flow in from t+1: t in the prefix and t+1 in t's
  document."""
  nxt = jnp.pad(segment_ids, ((0, 0), (0, 1)))[:, 1:]
  return prefix_mask.astype(bool) & (nxt == segment_ids) & (segment_ids > 0)


def decay_keep(segment_ids: jax.Array, prefix_mask: jax.Array | None, width: int,
               bidirectional: bool) -> jax.Array:
  """Where each channel keeps its incoming state: (B, L, 1), or (B, L, width) when bidirectional."""
  keep = forward_decay_mask(segment_ids)[..., None]
  if not bidirectional:
    return keep
  if prefix_mask is None:
    raise ValueError("a bidirectional layer needs the batch's prefix_mask")
  half = width // 2
  keep_rev = reverse_decay_mask(segment_ids, prefix_mask)[..., None]
  shape = (*segment_ids.shape, half)
  return jnp.concatenate([jnp.broadcast_to(keep, shape), jnp.broadcast_to(keep_rev, shape)], -1)


def split_scan(a: jax.Array, x: jax.Array, *, bidirectional: bool,
               impl: str) -> tuple[jax.Array, jax.Array]:
  """The layer's scan: all channels forward, or forward half + reverse half when bidirectional.

  Args:
    a: (B, L, W) float32 decays, already zeroed by `decay_keep`.
    x: (B, L, W) drive in the compute dtype.
    bidirectional: split the channels as Birdie does.
    impl: the `linear_scan` implementation.

  Returns:
    `(y, h)`: all states (B, L, W) in `x`'s dtype, and the float32 forward state after the last
    position, (B, W) or (B, W // 2) when bidirectional (the reverse half is not needed to decode).
  """
  if not bidirectional:
    y, h = _scan(a, x, reverse=False, impl=impl)
    return checkpoint_name(y, RECURRENCE_OUTPUT), h
  half = x.shape[-1] // 2
  y_fwd, h_fwd = _scan(a[..., :half], x[..., :half], reverse=False, impl=impl)
  y_rev, _ = _scan(a[..., half:], x[..., half:], reverse=True, impl=impl)
  return checkpoint_name(jnp.concatenate([y_fwd, y_rev], axis=-1), RECURRENCE_OUTPUT), h_fwd


def _scan(a: jax.Array, x: jax.Array, *, reverse: bool, impl: str) -> tuple[jax.Array, jax.Array]:
  """`linear_scan`, split over the mesh axes of `length` when the current rules shard it."""
  spec = activation_spec(("batch", "length", "lru"), x.shape)
  with jax.named_scope("linear_scan"):  # a category of `python -m birdie_jax.bench profile`
    if spec is None:
      return linear_scan(a, x, reverse=reverse, impl=impl)
    return sequence_parallel_scan(a, x, spec=spec, reverse=reverse, impl=impl)


def split_step(a: jax.Array, x: jax.Array, h: jax.Array, *,
               bidirectional: bool) -> tuple[jax.Array, jax.Array]:
  """One decoding step past the prompt, where every position is outside the prefix.

  Args:
    a: (B, 1, W) float32 decays for a token continuing its document.
    x: (B, 1, W) drive in the compute dtype.
    h: (B, W) or (B, W // 2) float32 forward state.
    bidirectional: the reverse half then has `a = 0`, so its output is the drive itself.

  Returns:
    `(y, h)`: (B, 1, W) output in `x`'s dtype and the new forward state.
  """
  width = h.shape[-1]
  h = a[:, 0, :width] * h + x[:, 0, :width].astype(jnp.float32)
  y = h[:, None].astype(x.dtype)
  if bidirectional:
    y = jnp.concatenate([y, x[..., width:]], axis=-1)
  return y, h
