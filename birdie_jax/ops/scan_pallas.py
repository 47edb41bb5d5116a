"""Pallas kernels for `linear_scan`: a sequential float32 scan per channel block, fused backward.

Each program owns one batch row and `block_width` channels and walks the sequence one row at a
time with the state in registers (GPU) or vregs (TPU), so every input is read once and every
output written once: 3 tensor passes forward, 5 backward. Loads for `unroll` rows are issued
before their multiply-adds so that many rows are in flight at once.

The grid is (batch, channel blocks, sequence blocks). On GPU (Triton) the whole sequence is one
block (Triton runs grid steps in parallel, so no state can pass between them). On TPU (Mosaic)
the sequence is cut into `block_len` rows, the last grid axis runs in order and the state stays
in the resident `(1, block_width)` output block between sequence blocks, as in RecurrentGemma's
kernel; Mosaic cannot load single rows of packed 16-bit tiles, so there 16-bit tensors are
converted to float32 around the kernels (extra HBM passes; measured on GPU only). On CPU the
kernels run in Pallas interpret mode.

Backward (custom VJP) of `h_t = a_t h_{t-1} + x_t`, `y = h`: walking the other way with carry
`c` (the gradient flowing into `h_t` from later steps), `dh_t = g_t + c`, `dx_t = dh_t`,
`da_t = dh_t h_{t-1}` (`h_{-1} = h0`) and `c = a_t dh_t`; `dh0` is the final `c`. The saved
`y` (in `x`'s dtype) provides `h_{t-1}`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

_GPU_PLATFORMS = ("gpu", "cuda", "rocm")
# Rows of the neighbouring-block slice read by the TPU backward (a bf16 sublane tile).
_EDGE_ROWS = 16


@dataclasses.dataclass(frozen=True)
class Tiling:
  """How the kernels cut the work.

  Attributes:
    block_width: Channels per program.
    block_len: Sequence rows per grid step; None puts the whole sequence in one step (GPU).
    unroll: Rows per loop iteration (their loads are issued together).
    num_warps: Warps per program (Triton only).
  """
  block_width: int
  block_len: int | None
  unroll: int
  num_warps: int = 1

  @classmethod
  def parse(cls, spec: str) -> Tiling:
    """`'WIDTHxUNROLLxWARPS'` (whole sequence) or `'WIDTHxUNROLLxWARPSxLEN'`."""
    width, unroll, warps, *length = (int(part) for part in spec.split("x"))
    return cls(width, length[0] if length else None, unroll, warps)

  def spec(self) -> str:
    """The inverse of `parse`."""
    parts = (self.block_width, self.unroll, self.num_warps) + (
        () if self.block_len is None else (self.block_len,))
    return "x".join(map(str, parts))


GPU_TILING = Tiling(block_width=64, block_len=None, unroll=64, num_warps=1)
TPU_TILING = Tiling(block_width=256, block_len=256, unroll=8)


def default_tiling(platform: str) -> Tiling:
  """The tiling for a JAX backend name (CPU interpret mode uses the GPU tiling)."""
  return TPU_TILING if platform == "tpu" else GPU_TILING


def pallas_scan(a: jax.Array, x: jax.Array, h0: jax.Array | None = None, *, reverse: bool = False,
                tiling: Tiling | None = None,
                platform: str | None = None) -> tuple[jax.Array, jax.Array]:
  """`linear_scan`'s contract with Pallas kernels: `(y in x.dtype, float32 h_last)`.

  Args:
    a: Decays `(batch, length, width)`, any float dtype (read as is, upcast in the kernel).
    x: Inputs, same shape.
    h0: Optional `(batch, width)` initial state.
    reverse: Scan right to left.
    tiling: Overrides the platform's default `Tiling`.
    platform: The backend to build for (default: the current one); "tpu" with a TPU topology's
      devices compiles ahead of time from CPU.
  """
  platform = platform or jax.default_backend()
  tiling = tiling or default_tiling(platform)
  batch, _, width = x.shape
  h0 = jnp.zeros((batch, width), jnp.float32) if h0 is None else h0.astype(jnp.float32)
  return _scan(a, x, h0, reverse, (tiling, platform))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _scan(a, x, h0, reverse, target):
  return _forward(a, x, h0, reverse, target)


def _scan_fwd(a, x, h0, reverse, target):
  y, h_last = _forward(a, x, h0, reverse, target)
  return (y, h_last), (a, y, h0)


def _scan_bwd(reverse, target, residuals, cotangents):
  a, y, h0 = residuals
  g, g_last = cotangents
  return _backward(a, y, h0, g.astype(y.dtype), g_last.astype(jnp.float32), reverse, target)


_scan.defvjp(_scan_fwd, _scan_bwd)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Padded sizes and the grid for one call."""
  tiling: Tiling
  platform: str
  length: int
  width: int
  block_len: int
  padded_len: int
  padded_width: int

  @classmethod
  def make(cls, shape: tuple[int, ...], target: tuple[Tiling, str]) -> _Plan:
    tiling, platform = target
    _, length, width = shape
    if tiling.block_len is not None and platform in _GPU_PLATFORMS:
      raise ValueError("Triton runs grid steps in parallel: GPU tilings need block_len=None.")
    if tiling.block_len is None:
      block_len = length
    else:
      block_len = min(tiling.block_len, -(-length // _EDGE_ROWS) * _EDGE_ROWS)
    return cls(tiling, platform, length, width, block_len, -(-length // block_len) * block_len,
               -(-width // tiling.block_width) * tiling.block_width)

  @property
  def num_blocks(self) -> int:
    return self.padded_len // self.block_len

  def grid(self, batch: int) -> tuple[int, int, int]:
    return (batch, self.padded_width // self.tiling.block_width, self.num_blocks)

  def kernel_dtype(self, dtype: jnp.dtype) -> jnp.dtype:
    """Mosaic loads single rows of 32-bit types only: on TPU, 16-bit tensors go as float32."""
    return jnp.float32 if self.platform == "tpu" else dtype

  def pad(self, t: jax.Array, value: float, reverse: bool) -> jax.Array:
    """Pads (B, L, W) to the padded sizes (extra rows on the far side of the scan); casts to
    `kernel_dtype`."""
    rows = self.padded_len - self.length
    return jnp.pad(t.astype(self.kernel_dtype(t.dtype)),
                   ((0, 0), (rows, 0) if reverse else (0, rows),
                    (0, self.padded_width - self.width)), constant_values=value)

  def out_shape(self, batch: int, dtype: jnp.dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, self.padded_len, self.padded_width),
                                self.kernel_dtype(dtype))

  def pad_state(self, h: jax.Array) -> jax.Array:
    """(B, W) -> (B, 1, padded W): a full-size sublane dim keeps Mosaic's tiling rule."""
    return jnp.pad(h, ((0, 0), (0, self.padded_width - self.width)))[:, None]

  def unpad(self, t: jax.Array, reverse: bool, dtype: jnp.dtype) -> jax.Array:
    start = self.padded_len - self.length if reverse else 0
    return t[:, start:start + self.length, :self.width].astype(dtype)

  def unpad_state(self, h: jax.Array) -> jax.Array:
    return h[:, 0, :self.width]

  def rows_spec(self, time_block: Callable) -> pl.BlockSpec:
    return pl.BlockSpec((None, self.block_len, self.tiling.block_width),
                        lambda b, d, s: (b, time_block(s), d))

  def state_spec(self) -> pl.BlockSpec:
    return pl.BlockSpec((None, 1, self.tiling.block_width), lambda b, d, s: (b, 0, d))

  def call(self, kernel: Callable, in_specs: list, out_shapes: list, out_specs: list,
           batch: int) -> Callable:
    """The `pallas_call` for this platform: Triton, Mosaic or (CPU) interpret mode."""
    params = None
    if self.platform == "tpu":
      params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    elif self.platform in _GPU_PLATFORMS:
      params = plgpu.CompilerParams(num_warps=self.tiling.num_warps, num_stages=1)
    return pl.pallas_call(kernel, grid=self.grid(batch), in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shapes, compiler_params=params,
                          interpret=self.platform == "cpu")


def _forward(a, x, h0, reverse, target):
  plan = _Plan.make(x.shape, target)
  batch, nb = x.shape[0], plan.num_blocks
  time_block = (lambda s: nb - 1 - s) if reverse else (lambda s: s)
  rows = plan.rows_spec(time_block)
  state = plan.state_spec()
  kernel = functools.partial(_forward_kernel, reverse=reverse, unroll=plan.tiling.unroll)
  y, h_last = plan.call(
      kernel, [rows, rows, state],
      [plan.out_shape(batch, x.dtype),
       jax.ShapeDtypeStruct((batch, 1, plan.padded_width), jnp.float32)],
      [rows, state], batch,
  )(plan.pad(a, 1.0, reverse), plan.pad(x, 0.0, reverse), plan.pad_state(h0))
  return plan.unpad(y, reverse, x.dtype), plan.unpad_state(h_last)


def _backward(a, y, h0, g, g_last, reverse, target):
  plan = _Plan.make(y.shape, target)
  batch, nb = y.shape[0], plan.num_blocks
  # The backward walks the blocks in the opposite order to the forward.
  time_block = (lambda s: s) if reverse else (lambda s: nb - 1 - s)
  rows = plan.rows_spec(time_block)
  state = plan.state_spec()
  in_specs = [rows, rows, rows, state, state]
  args = [plan.pad(a, 1.0, reverse), plan.pad(y, 0.0, reverse), plan.pad(g, 0.0, reverse),
          plan.pad_state(h0), plan.pad_state(g_last)]
  if nb > 1:  # The state before each block's first row lives in the neighbouring block.
    per_block, last = plan.block_len // _EDGE_ROWS, plan.padded_len // _EDGE_ROWS - 1
    if reverse:
      edge_block = lambda s: jnp.minimum((time_block(s) + 1) * per_block, last)
    else:
      edge_block = lambda s: jnp.maximum(time_block(s) * per_block - 1, 0)
    in_specs.append(pl.BlockSpec((None, _EDGE_ROWS, plan.tiling.block_width),
                                 lambda b, d, s: (b, edge_block(s), d)))
    args.append(args[1])
  kernel = functools.partial(_backward_kernel, reverse=reverse, unroll=plan.tiling.unroll,
                             has_edge=nb > 1)
  dx, da, dh0 = plan.call(
      kernel, in_specs,
      [plan.out_shape(batch, y.dtype), plan.out_shape(batch, a.dtype),
       jax.ShapeDtypeStruct((batch, 1, plan.padded_width), jnp.float32)],
      [rows, rows, state], batch,
  )(*args)
  return (plan.unpad(da, reverse, a.dtype), plan.unpad(dx, reverse, y.dtype),
          plan.unpad_state(dh0))


def _row(ref, t) -> jax.Array:
  """Row `t` of a (rows, width) block as float32 (1, width)."""
  return ref[pl.ds(t, 1), :].astype(jnp.float32)


def _sweep(load: Callable, update: Callable, carry, first: int, count: int, descending: bool,
           unroll: int):
  """Runs `carry = update(carry, load(t), t)` for t over `first .. first + count - 1`.

  Rows go in descending order if `descending`; `unroll` rows per loop iteration, their loads
  issued before any of their updates.
  """

  def row(i):
    return first + count - 1 - i if descending else first + i

  def run(start, iterations, size, carry):
    def body(i, carry):
      rows = [row(start + i * size + j) for j in range(size)]
      loaded = [load(t) for t in rows]
      for t, values in zip(rows, loaded):
        carry = update(carry, values, t)
      return carry

    return jax.lax.fori_loop(0, iterations, body, carry) if iterations else carry

  main = count // unroll
  carry = run(0, main, unroll, carry)
  return run(main * unroll, count - main * unroll, 1, carry)


def _forward_kernel(a_ref, x_ref, h0_ref, y_ref, h_ref, *, reverse: bool, unroll: int):
  """One (rows, width) block of the forward scan; `h_ref` carries the state across blocks."""

  @pl.when(pl.program_id(2) == 0)
  def _():
    h_ref[...] = h0_ref[...]

  def update(h, values, t):
    a, x = values
    h = a * h + x
    y_ref[pl.ds(t, 1), :] = h.astype(y_ref.dtype)
    return h

  h_ref[...] = _sweep(lambda t: (_row(a_ref, t), _row(x_ref, t)), update, h_ref[...], 0,
                      a_ref.shape[0], reverse, unroll)


def _backward_kernel(a_ref, y_ref, g_ref, h0_ref, g_last_ref, *refs, reverse: bool, unroll: int,
                     has_edge: bool):
  """One block of the backward scan (walking opposite to the forward); `dh0_ref` carries `c`."""
  edge_ref, (dx_ref, da_ref, dh0_ref) = (refs[0] if has_edge else None), refs[-3:]
  rows = a_ref.shape[0]
  step_back = 1 if reverse else -1  # Where h_{t-1} of the forward scan lives, relative to t.

  @pl.when(pl.program_id(2) == 0)
  def _():
    dh0_ref[...] = g_last_ref[...]

  def update(c, values, t):
    a, g, h_prev = values
    dh = g + c
    dx_ref[pl.ds(t, 1), :] = dh.astype(dx_ref.dtype)
    da_ref[pl.ds(t, 1), :] = (dh * h_prev).astype(da_ref.dtype)
    return a * dh

  def load(t):
    return _row(a_ref, t), _row(g_ref, t), _row(y_ref, t + step_back)

  # Every row but the last one visited has its h_{t-1} in this block.
  c = _sweep(load, update, dh0_ref[...], 0 if reverse else 1, rows - 1, not reverse, unroll)
  t = rows - 1 if reverse else 0
  h_prev = h0_ref[...]
  if has_edge:
    outside = _row(edge_ref, 0 if reverse else _EDGE_ROWS - 1)
    h_prev = jnp.where(pl.program_id(2) == pl.num_programs(2) - 1, h_prev, outside)
  dh0_ref[...] = update(c, (_row(a_ref, t), _row(g_ref, t), h_prev), t)
