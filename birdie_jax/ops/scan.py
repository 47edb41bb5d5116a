"""The one entry point for the diagonal linear recurrence used by the SSM layers.

`linear_scan` computes, along axis 1 of `(batch, length, width)` arrays,

  h_t = a_t * h_{t-1} + x_t,    y_t = h_t,

starting from `h_{-1} = h0` (zeros when omitted). With `reverse=True` it runs
right to left, `h_t = a_t * h_{t+1} + x_t` starting from `h_L = h0`, and the
returned final state is `h_0`, the state after position 0.

Precision policy: inputs of any dtype are upcast to float32 and the whole
recurrence accumulates in float32; `y` is cast back to `x`'s dtype once at the
end and the final state is returned in float32. A bfloat16 model therefore
sees only one bfloat16 rounding per output, however long the sequence.

Several implementations compute the same function (`ScanImpl`); `"auto"`
picks the fastest measured on the platform (`experiments/benchmarks/README.md`).
The plain-JAX ones get their gradients from autodiff; `"pallas"`
(`scan_pallas.py`) has a custom VJP.
"""

import enum
import functools

import jax
import jax.numpy as jnp

from birdie_jax.errors import ConfigError
from birdie_jax.ops import scan_autotune
from birdie_jax.ops.scan_pallas import pallas_scan

# Steps per iteration of the sequential `lax.scan` loop.
_LINEAR_UNROLL = 8


class ScanImpl(enum.StrEnum):
  """How `linear_scan` evaluates the recurrence."""

  AUTO = "auto"
  ASSOCIATIVE = "associative"  # jax.lax.associative_scan over the whole length.
  LINEAR = "linear"  # jax.lax.scan, one step per position.
  CHUNKED = "chunked"  # associative_scan within chunks, lax.scan across them.
  PALLAS = "pallas"  # Pallas kernels (Triton on GPU, Mosaic on TPU, interpreted on CPU).


# Fastest measured per platform (experiments/benchmarks/README.md); associative elsewhere
# (TPU included until its kernel has been timed there).
_AUTO = {"gpu": ScanImpl.PALLAS}


def resolve_impl(impl: ScanImpl | str) -> ScanImpl:
  """Returns the concrete implementation for `impl`, resolving `"auto"`."""
  try:
    impl = ScanImpl(impl)
  except ValueError:
    valid = ", ".join(repr(m.value) for m in ScanImpl)
    raise ConfigError(f"Unknown scan impl {impl!r}; valid names: {valid}.") from None
  if impl is ScanImpl.AUTO:
    return _AUTO.get(jax.default_backend(), ScanImpl.ASSOCIATIVE)
  return impl


@functools.partial(jax.jit, static_argnames=("reverse", "impl", "chunk_size"))
def linear_scan(
    a: jax.Array,
    x: jax.Array,
    h0: jax.Array | None = None,
    *,
    reverse: bool = False,
    impl: ScanImpl | str = ScanImpl.AUTO,
    chunk_size: int = 128,
) -> tuple[jax.Array, jax.Array]:
  """Runs `h_t = a_t * h_{t-1} + x_t` along axis 1 (right to left if `reverse`).

  Document boundaries are the caller's business: setting `a_t = 0` at the
  first position of a document (forward) makes `h_t = x_t` there, so nothing
  before it leaks in. For `reverse=True`, `a_t = 0` at a document's last
  position cuts it off from everything to its right.

  Args:
    a: Decay, `(batch, length, width)`.
    x: Input, same shape as `a`.
    h0: Optional `(batch, width)` state before the first step (before the last
      position when `reverse`); zeros when omitted.
    reverse: Scan from the last position to the first.
    impl: A `ScanImpl` or its name; `"auto"` picks the platform's fastest.
    chunk_size: Chunk length for `"chunked"`; ignored by the others.

  Returns:
    `(y, h_last)`: all states `h_t` as `(batch, length, width)` in `x`'s dtype,
    and the final state (`h_{L-1}`, or `h_0` when `reverse`) as float32
    `(batch, width)`.

  Raises:
    ConfigError: (a `ValueError`) for an unknown `impl`, a bad `chunk_size`
      or mismatched shapes.
  """
  impl = resolve_impl(impl)
  _check_shapes(a, x, h0)
  if chunk_size < 1:
    raise ConfigError(f"chunk_size must be positive, got {chunk_size}.")
  if impl is ScanImpl.PALLAS and x.shape[1]:
    # Reads a, x as they are (float32 inside); on a GPU the card's tiling (scan_autotune.py).
    return pallas_scan(a, x, h0, reverse=reverse, tiling=scan_autotune.tiling_for_backend())
  out_dtype = x.dtype
  a = a.astype(jnp.float32)
  x = x.astype(jnp.float32)
  if h0 is not None:
    h0 = h0.astype(jnp.float32)
  batch, length, width = x.shape
  if length == 0:
    h_last = jnp.zeros((batch, width), jnp.float32) if h0 is None else h0
    return x.astype(out_dtype), h_last
  match impl:
    case ScanImpl.ASSOCIATIVE:
      y, h_last = _associative(a, x, h0, reverse)
    case ScanImpl.LINEAR:
      y, h_last = _linear(a, x, h0, reverse)
    case ScanImpl.CHUNKED:
      y, h_last = _chunked(a, x, h0, reverse, chunk_size)
  return y.astype(out_dtype), h_last


def _check_shapes(a: jax.Array, x: jax.Array, h0: jax.Array | None) -> None:
  """Raises ConfigError unless `a`, `x` are equal 3-D shapes and `h0` fits them."""
  if a.shape != x.shape:
    raise ConfigError(f"linear_scan: a.shape {a.shape} != x.shape {x.shape}.")
  if x.ndim != 3:
    raise ConfigError(f"linear_scan: expected (batch, length, width) inputs, got shape {x.shape}.")
  if h0 is not None and h0.shape != (x.shape[0], x.shape[2]):
    raise ConfigError(
        f"linear_scan: h0.shape {h0.shape} != (batch, width) {(x.shape[0], x.shape[2])}.")


def _combine(
    left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
  """Composes two affine steps `h -> a*h + b`, `left` applied first."""
  a1, b1 = left
  a2, b2 = right
  return a1 * a2, a2 * b1 + b2


def _associative(
    a: jax.Array, x: jax.Array, h0: jax.Array | None, reverse: bool
) -> tuple[jax.Array, jax.Array]:
  """Parallel prefix scan over the whole length; float32 in and out."""
  first = -1 if reverse else 0
  if h0 is not None:
    x = x.at[:, first].add(a[:, first] * h0)
  _, y = jax.lax.associative_scan(_combine, (a, x), reverse=reverse, axis=1)
  return y, y[:, -1 - first]


def _linear(
    a: jax.Array, x: jax.Array, h0: jax.Array | None, reverse: bool
) -> tuple[jax.Array, jax.Array]:
  """Sequential scan over time with a float32 carry; float32 in and out."""
  if h0 is None:
    h0 = jnp.zeros((x.shape[0], x.shape[2]), jnp.float32)

  def step(h: jax.Array, a_x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    a_t, x_t = a_x
    h = a_t * h + x_t
    return h, h

  time_major = (jnp.swapaxes(a, 0, 1), jnp.swapaxes(x, 0, 1))
  h_last, y = jax.lax.scan(step, h0, time_major, reverse=reverse, unroll=_LINEAR_UNROLL)
  return jnp.swapaxes(y, 0, 1), h_last


def _chunked(
    a: jax.Array, x: jax.Array, h0: jax.Array | None, reverse: bool, chunk_size: int
) -> tuple[jax.Array, jax.Array]:
  """Associative scans within chunks, the state carried across chunks by lax.scan."""
  batch, length, width = x.shape
  chunk = min(chunk_size, length)
  num_chunks = -(-length // chunk)
  pad = num_chunks * chunk - length
  # Identity steps (a=1, x=0) on the far side leave every real state unchanged.
  far_side = ((0, 0), (pad, 0) if reverse else (0, pad), (0, 0))
  a = jnp.pad(a, far_side, constant_values=1)
  x = jnp.pad(x, far_side)
  if h0 is None:
    h0 = jnp.zeros((batch, width), jnp.float32)

  def to_chunks(t: jax.Array) -> jax.Array:
    return t.reshape(batch, num_chunks, chunk, width).swapaxes(0, 1)

  def step(h: jax.Array, a_x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    y, h = _associative(*a_x, h, reverse)
    return h, y

  h_last, y = jax.lax.scan(step, h0, (to_chunks(a), to_chunks(x)), reverse=reverse)
  y = y.swapaxes(0, 1).reshape(batch, num_chunks * chunk, width)
  return (y[:, pad:] if reverse else y[:, :length]), h_last
