"""The model's residual blocks in order, optionally run as one `lax.scan` over stacked layers.

Blocks whose structure repeats with period p (every Hawk or Transformer block alike: p = 1; Birdie's
bidirectional layers every n-th block: p = n; Griffin's recurrent, recurrent, attention: p = 3) are
stored with `model.scan_layers` as p stacked blocks, each parameter with a leading `layers` axis of
depth // p repeats, plus the depth % p blocks left over at the end, unstacked. One scan step runs
one group of p blocks, so XLA compiles p blocks instead of depth (compile time and compile memory
of the 1.4B and 7B models), and the numerics equal running the blocks one by one. Without scanning
(or with fewer than two repeats) every block is stored and run on its own.

Decoding caches follow the same layout: `{"stacked": [cache of group position j, leading axis
repeats] or None, "tail": [cache per left-over block]}`. A decoding step reads each stacked
layer's cache as the scan's input and returns only its update (the token's keys and values, see
`blocks.update_cache`), written into the stacked caches after the scan.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax.models.blocks import Cache, ResidualBlock, Segments, StepInfo, update_cache
from birdie_jax.models.remat import remat_policy

LAYERS_AXIS = "layers"  # the logical name of the stacked parameters' leading axis
STACKED = "stacked"  # the BlockStack attribute (a key in param paths) holding stacked blocks


def layer_ndim(path: Sequence[Any], leaf: Any) -> int:
  """A parameter's rank within one layer: its rank less the `layers` axis if it is stacked
  (`path` as `jax.tree_util` gives it)."""
  stacked = any(str(getattr(k, "key", k)) == STACKED for k in path)
  return leaf.ndim - stacked


def pattern_period(blocks: Sequence[nnx.Module]) -> int:
  """The smallest p such that every block has the structure (graph and shapes) of block i mod p."""
  signatures = [_signature(b) for b in blocks]
  for period in range(1, len(blocks) + 1):
    if all(s == signatures[i % period] for i, s in enumerate(signatures)):
      return period
  return len(blocks)


def _signature(block: nnx.Module) -> tuple:
  graphdef, state = nnx.split(block)
  shapes = jax.tree.map(lambda v: (v.shape, v.dtype), nnx.to_pure_dict(state))
  return graphdef, jax.tree.structure(shapes), tuple(jax.tree.leaves(shapes))


def _stack(modules: Sequence[nnx.Module]) -> nnx.Module:
  """A module of `modules[0]`'s structure whose variables hold all of theirs, stacked on axis 0."""
  graphdef, state = nnx.split(modules[0])
  values = [nnx.to_pure_dict(nnx.state(m)) for m in modules]
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda *v: jnp.stack(v), *values))
  state = nnx.spmd.add_axis(state, 0, {nnx.PARTITION_NAME: LAYERS_AXIS})
  return nnx.merge(graphdef, state)


def _layer(value: Any, index: int) -> Any:
  """Entry `index` of a stacked value (an array or, under `nnx.eval_shape`, a shape)."""
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(value.shape[1:], value.dtype)
  return value[index]


def unstack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """A model's params (a pure dict) with stacked blocks, as the same model stores them without
  `scan_layers`: block r * p + j is entry r of group position j, then the left-over blocks.

  Decoding runs faster unstacked: a scanned step slices each stacked layer's KV cache, and XLA
  copies the slice before attention reads it. The slices are new arrays: for a moment the blocks'
  params are held twice. Params without stacked blocks are returned as they are.
  """
  blocks = params["blocks"]
  stacked = blocks.get(STACKED)
  if not stacked:
    return params
  period = len(stacked)
  repeats = jax.tree.leaves(stacked)[0].shape[0]
  layers = {r * period + j: jax.tree.map(lambda a, r=r: a[r], stacked[j])
            for r in range(repeats) for j in range(period)}
  layers.update({repeats * period + i: block for i, block in blocks.get("tail", {}).items()})
  return {**params, "blocks": {"tail": layers}}


class BlockStack(nnx.Module):
  """Residual blocks run in order; with `scan`, repeats of their pattern are stacked (module doc).

  `remat` (`model.remat`, see `remat.py`) picks what each block keeps for the backward pass.
  """

  def __init__(self, blocks: Sequence[ResidualBlock], *, scan: bool, remat: str = "none"):
    period = pattern_period(blocks) if scan else len(blocks)
    repeats = len(blocks) // period if scan else 0
    repeats = repeats if repeats >= 2 else 0
    self.stacked = nnx.List([_stack(blocks[j:repeats * period:period]) for j in range(period)]
                            ) if repeats else None
    self.tail = nnx.List(blocks[repeats * period:])
    self.repeats = repeats
    self.remat = remat

  def __len__(self) -> int:
    return self.repeats * (len(self.stacked) if self.stacked is not None else 0) + len(self.tail)

  def layers(self) -> list[ResidualBlock]:
    """Every block in order, the stacked ones as unstacked copies (for inspection, not training)."""
    out = []
    if self.stacked is not None:
      parts = [nnx.split(m) for m in self.stacked]
      for r in range(self.repeats):
        for graphdef, state in parts:
          state = jax.tree.map(lambda v: _layer(v, r), state)
          state = nnx.spmd.remove_axis(state, 0, {nnx.PARTITION_NAME: LAYERS_AXIS})
          out.append(nnx.merge(graphdef, state))
    return out + list(self.tail)

  def __call__(self, x: jax.Array, seg: Segments, *,
               cache_len: int | None = None) -> tuple[jax.Array, Cache]:
    """(B, L, D) through every block; the caches (layout in the module doc) with `cache_len`."""

    def run(block: ResidualBlock, x: jax.Array, scanned: bool) -> tuple[jax.Array, Cache]:
      policy = remat_policy(self.remat, scanned=scanned)
      if policy is not None and cache_len is None:
        return nnx.remat(lambda b, x: b(x, seg)[0], policy=policy)(block, x), None
      return block(x, seg, cache_len=cache_len)

    stacked = None
    if self.stacked is not None:
      graphdefs, params = self._split_stacked()

      def body(x, layer_params):
        caches = []
        for graphdef, p in zip(graphdefs, layer_params):
          x, cache = run(nnx.merge(graphdef, p), x, scanned=True)
          caches.append(cache)
        return x, caches if cache_len is not None else None

      x, stacked = jax.lax.scan(body, x, params)
    tail = []
    for block in self.tail:
      x, cache = run(block, x, scanned=False)
      tail.append(cache)
    if cache_len is None:
      return x, None
    return x, {"stacked": stacked, "tail": tail}

  def step(self, x: jax.Array, cache: Cache, info: StepInfo) -> tuple[jax.Array, Cache]:
    """One token (B, 1, D) through every block, advancing each block's cache.

    The scan over stacked layers reads their caches as inputs and returns only the blocks'
    updates (new keys and values, small recurrent states), which are written into the stacked
    caches after it, in place: returning whole caches from the scan would copy every one of
    them once per token.
    """
    stacked = None
    if self.stacked is not None:
      graphdefs, params = self._split_stacked()

      def body(x, layer):
        layer_params, layer_caches = layer
        updates = []
        for graphdef, p, c in zip(graphdefs, layer_params, layer_caches):
          x, update = nnx.merge(graphdef, p).step(x, c, info)
          updates.append(update)
        return x, updates

      x, updates = jax.lax.scan(body, x, (params, cache["stacked"]))
      stacked = [update_cache(c, u, stacked=True) for c, u in zip(cache["stacked"], updates)]
    tail = []
    for block, block_cache in zip(self.tail, cache["tail"]):
      x, update = block.step(x, block_cache, info)
      tail.append(update_cache(block_cache, update))
    return x, {"stacked": stacked, "tail": tail}

  def _split_stacked(self) -> tuple[list[nnx.GraphDef], list[Any]]:
    """Per group position: the block's graph and its stacked params as a pure pytree."""
    parts = [nnx.split(m) for m in self.stacked]
    return [g for g, _ in parts], [nnx.to_pure_dict(s) for _, s in parts]
