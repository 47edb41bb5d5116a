"""The pre-norm residual block shared by every family, and the per-token context blocks receive.

Every temporal mixer (RG-LRU block, Gated SSM, attention) has the same two methods:
  `__call__(x, seg, *, cache_len=None) -> (y, cache)`: the whole (B, L, D) row in parallel; with
      `cache_len` it also returns the decoding cache after the row's last position (else None).
  `step(x, cache, info) -> (y, update)`: one (B, 1, D) token continuing the last document; the
      update is the new cache, except that a leaf written one slot per token (attention's KV ring
      buffer) comes back as a `RingWrite` of its new entries. `update_cache` applies it in place,
      to one block's cache or to a stack of them after a scan over layers, so a decoding step
      writes only the new keys and values instead of copying whole caches.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
from flax import nnx

from birdie_jax.models.layers import MLP, RMSNorm

Cache = Any  # a decoding cache: a block's pytree of arrays, or the model's (`lm.LanguageModel`)


class Segments(NamedTuple):
  """The packer's per-token fields, each (B, L): document ids (0 = padding), positions within the
  document, and the Birdie prefix mask (True on an example's inputs X)."""
  segment_ids: jax.Array
  positions: jax.Array
  prefix_mask: jax.Array


class StepInfo(NamedTuple):
  """What a decoding step needs besides its token: its position in the document (B, 1) and its
  column in the row (a scalar, the same for every row: prompts are left-padded)."""
  positions: jax.Array
  index: jax.Array


class RingWrite(NamedTuple):
  """New entries of a (B, R, ...) cache leaf: (B, 1, ...) `rows` for column `slot`."""
  rows: jax.Array
  slot: jax.Array


def update_cache(cache: Cache, update: Cache, *, stacked: bool = False) -> Cache:
  """`cache` after a `step`'s `update`: `RingWrite` leaves written at their slot, other leaves
  replaced. With `stacked`, both have a leading layers axis (a stack of blocks' caches and the
  stack's updates, as `lax.scan` returns them) and every layer's slot is the same."""

  def apply(leaf: jax.Array, new: jax.Array | RingWrite) -> jax.Array:
    if not isinstance(new, RingWrite):
      return new
    slot = new.slot[0] if stacked else new.slot
    start = (0,) * stacked + (0, slot) + (0,) * (leaf.ndim - 2 - stacked)
    return jax.lax.dynamic_update_slice(leaf, new.rows.astype(leaf.dtype), start)

  return jax.tree.map(apply, cache, update)


def bidirectional_layers(num_layers: int, bidirectional: bool, every: int) -> list[bool]:
  """Which of `num_layers` recurrent layers are bidirectional: layers 0, every, 2*every, ..."""
  return [bidirectional and i % every == 0 for i in range(num_layers)]


class ResidualBlock(nnx.Module):
  """x + mixer(norm(x)), then (when there is an MLP) x + mlp(norm(x))."""

  def __init__(self, width: int, mixer: nnx.Module, mlp: MLP | None = None):
    self.mixer_norm = RMSNorm(width)
    self.mixer = mixer
    self.mlp_norm = RMSNorm(width) if mlp is not None else None
    self.mlp = mlp

  def __call__(self, x: jax.Array, seg: Segments, *,
               cache_len: int | None = None) -> tuple[jax.Array, Cache]:
    """(B, L, D) -> (B, L, D) and the mixer's cache (None without `cache_len`)."""
    y, cache = self.mixer(self.mixer_norm(x), seg, cache_len=cache_len)
    return self._mlp(x + y), cache

  def step(self, x: jax.Array, cache: Cache, info: StepInfo) -> tuple[jax.Array, Cache]:
    """One token (B, 1, D) -> (B, 1, D) and the mixer's cache update (module doc)."""
    y, cache = self.mixer.step(self.mixer_norm(x), cache, info)
    return self._mlp(x + y), cache

  def _mlp(self, x: jax.Array) -> jax.Array:
    if self.mlp is None:
      return x
    return x + self.mlp(self.mlp_norm(x))
