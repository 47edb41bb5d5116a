"""`linear_scan` with the length axis sharded over mesh axes: sequence parallelism for the SSMs.

Each shard scans its own positions from a zero state, giving `y_t`; only carries cross shards.
Every shard's (total decay, final state) pair, two (batch, width) arrays, is all-gathered along
the sequence axes; a scan over the S pairs gives the state `h_in` entering each shard; each shard
then adds `h_in` times its cumulative decay:

    h_t = y_t + (a_first * ... * a_t) * h_in    (forward)
    h_t = y_t + (a_t * ... * a_last) * h_in     (reverse: h_in enters from the next shard)

This is `linear_scan` in exact arithmetic. Document resets need nothing more: `a = 0` at a boundary
zeroes the cumulative decay from there on, so no state from an earlier shard crosses it. The local
scan, the decays and the correction are float32, and `y` is cast to `x`'s dtype once at the end.

Cost per call and shard: one all-gather of 2 x batch x width float32 (independent of the length),
an S-step scan of the carries, and a cumulative product of the shard's decays (which, with the
float32 local outputs, is the extra memory: two (batch, length / S, width) float32 arrays).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from birdie_jax.ops.scan import ScanImpl, linear_scan


def sequence_parallel_scan(a: jax.Array, x: jax.Array, *, spec: PartitionSpec,
                           reverse: bool = False,
                           impl: ScanImpl | str = ScanImpl.AUTO) -> tuple[jax.Array, jax.Array]:
  """`linear_scan(a, x, reverse=reverse, impl=impl)` for arrays laid out as `spec` on the mesh.

  Args:
    a: Decay, `(batch, length, width)`.
    x: Input, same shape as `a`.
    spec: The arrays' PartitionSpec on the current mesh (`jax.set_mesh`); its length entry names
      the mesh axes the sequence is split over (None, or axes of size 1: plain `linear_scan`).
    reverse: Scan from the last position to the first.
    impl: The `linear_scan` implementation each shard runs.

  Returns:
    `(y, h_last)` as `linear_scan` returns them: `y` in `x`'s dtype laid out as `spec`, and the
    float32 `(batch, width)` state after the whole sequence (before it, when `reverse`).
  """
  sequence_axes = spec[1] if isinstance(spec[1], tuple) else (spec[1],) if spec[1] else ()
  mesh = jax.sharding.get_abstract_mesh()
  if math.prod(mesh.shape[axis] for axis in sequence_axes) == 1:
    return linear_scan(a, x, reverse=reverse, impl=impl)
  # Every output is split over the sequence axes (each shard returns its copy of the final
  # state), so no replication is claimed and the per-shard Pallas kernels need no axis types.
  @functools.partial(jax.shard_map, in_specs=(spec, spec), out_specs=(spec, spec),
                     check_vma=False)
  def scan_shard(a: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    a = a.astype(jnp.float32)
    y, h_local = linear_scan(a, x.astype(jnp.float32), reverse=reverse, impl=impl)
    decay = jax.lax.cumprod(a, axis=1, reverse=reverse)
    total = decay[:, 0] if reverse else decay[:, -1]
    # (2, batch, shards, width): every shard's total decay and zero-state final state.
    carries = jax.lax.all_gather(jnp.stack([total, h_local]), sequence_axes, axis=2)
    states, h_last = linear_scan(carries[0], carries[1], reverse=reverse,
                                 impl=ScanImpl.ASSOCIATIVE)
    # The state entering each shard: the one after its left (right, if reverse) neighbour.
    entering = jnp.pad(states, ((0, 0), (0, 1) if reverse else (1, 0), (0, 0)))
    entering = entering[:, 1:] if reverse else entering[:, :-1]
    h_in = jax.lax.dynamic_index_in_dim(entering, jax.lax.axis_index(sequence_axes), axis=1)
    return (y + decay * h_in).astype(x.dtype), h_last[:, None]

  y, h_last = scan_shard(a, x)
  return y, h_last[:, 0]
