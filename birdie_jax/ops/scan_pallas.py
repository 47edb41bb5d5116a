"""Pallas kernels for `linear_scan`: a sequential float32 scan per channel block, fused backward.

Each program owns one batch row and `block_width` channels and walks the sequence one row at a
time with the state in registers (GPU) or vregs (TPU), so every input is read once and every
output written once: 3 tensor passes forward, 5 backward. Loads for `unroll` rows are issued
before their multiply-adds so that many rows are in flight at once.

Without pipelining each loop iteration is a serial chain (issue `unroll` rows of loads, wait,
run the dependent multiply-adds and stores), so with few warps per SM the memory system idles
while a group is computed. GPU tilings can change that (suffixes in `Tiling.parse`): `prefetch`
(`p`) software-pipelines the loop over two register buffers, issuing each group's loads before
the previous group's updates (see `_sweep`); reads past the sequence are clamped to its last
group. `block_loads` (`b`) loads a group as one `(unroll, block_width)` block per tensor, split
into rows in registers: fewer, wider memory instructions. `num_stages` (`sN`) is passed to
Triton. TPU tilings take none of these. A tiling may give the backward kernel its own tiling
(`FORWARD/BACKWARD` specs): it moves 5 tensors to the forward's 3 and likes other settings.
Rows left after the last whole group (`length % unroll`) go one per iteration.

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
`y` (in `x`'s dtype) provides `h_{t-1}`: its row one back from t, clamped into the block, and
for the block's last row visited replaced by `h0` or the neighbouring block's row, so the
backward sweeps all rows of a block like the forward (no serial tail when `unroll` divides
them).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

GPU_PLATFORMS = ("gpu", "cuda", "rocm")
# Rows of the neighbouring-block slice read by the TPU backward (a bf16 sublane tile).
_EDGE_ROWS = 16
# `Tiling.parse`'s syntax.
_N = r"[1-9][0-9]*"
_SPEC = re.compile(rf"(?P<width>{_N})x(?P<unroll>{_N})x(?P<warps>{_N})(?:x(?P<len>{_N}))?"
                   rf"(?P<b>b?)(?P<p>p?)(?:s(?P<stages>{_N}))?")


@dataclasses.dataclass(frozen=True)
class Tiling:
  """How the kernels cut the work.

  Attributes:
    block_width: Channels per program.
    block_len: Sequence rows per grid step; None puts the whole sequence in one step (GPU).
    unroll: Rows per group, whose loads are issued together (one group per loop iteration, two
      with `prefetch`).
    num_warps: Warps per program (Triton only).
    block_loads: Load each tensor's `unroll` rows as one `(unroll, width)` block and split it in
      registers, instead of `unroll` single-row loads (GPU only; the backward's `h_{t-1}` rows
      of `y` stay single rows).
    prefetch: Software pipelining: issue the loads of each `unroll` rows before the updates of
      the previous ones (GPU only).
    num_stages: Triton's `num_stages` (GPU only).
    backward: The backward kernel's tiling, if not this one (its own `backward` unset).
  """
  block_width: int
  block_len: int | None
  unroll: int
  num_warps: int = 1
  block_loads: bool = False
  prefetch: bool = False
  num_stages: int = 1
  backward: Tiling | None = None

  @classmethod
  def parse(cls, spec: str) -> Tiling:
    """`'WIDTHxUNROLLxWARPS[xLEN][b][p][sSTAGES]'`, e.g. `'64x64x1'`, `'64x32x1ps2'`, optionally
    followed by `/` and the backward kernel's own spec, e.g. `'64x32x2bp/64x64x4b'`.

    No `xLEN` puts the whole sequence in one grid step; `b` sets `block_loads`, `p` `prefetch`
    and `sN` `num_stages` (default 1, never written), so `parse(s).spec() == s`.
    """
    forward, slash, backward = spec.partition("/")
    tilings = [_SPEC.fullmatch(part) for part in (forward, backward)[:1 + bool(slash)]]
    if not all(tilings) or any(m["stages"] == "1" for m in tilings) or backward == forward:
      raise ValueError(f"Bad tiling {spec!r}: want WIDTHxUNROLLxWARPS[xLEN][b][p][sSTAGES], "
                       "then optionally /BACKWARD (a different one), with positive integers and "
                       "STAGES > 1, e.g. 64x64x1, 64x32x1ps2 or 64x32x2bp/64x64x4b.")
    forward, *backward = (cls(int(m["width"]), m["len"] and int(m["len"]), int(m["unroll"]),
                              int(m["warps"]), bool(m["b"]), bool(m["p"]),
                              int(m["stages"] or 1)) for m in tilings)
    return dataclasses.replace(forward, backward=backward[0]) if backward else forward

  def spec(self) -> str:
    """The inverse of `parse`."""
    parts = (self.block_width, self.unroll, self.num_warps) + (
        () if self.block_len is None else (self.block_len,))
    return ("x".join(map(str, parts)) + "b" * self.block_loads + "p" * self.prefetch
            + (f"s{self.num_stages}" if self.num_stages != 1 else "")
            + (f"/{self.backward.spec()}" if self.backward else ""))

  def for_backward(self) -> Tiling:
    """The backward kernel's tiling."""
    return self.backward or self


# Fastest measured on an H100 (experiments/benchmarks/README.md, eighth session, 2026-12-06): a
# prefetching forward of 4 warps and Triton num_stages=2, the backward of the sixth session.
GPU_TILING = Tiling.parse("64x32x4bps2/64x64x4b")
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
  h0 = None if h0 is None else h0.astype(jnp.float32)
  return _scan(a, x, h0, reverse, (tiling, platform))


# A missing `h0` and a symbolic-zero `h_last` cotangent (the usual training case) are left out of
# the kernels' operands instead of passed as zero arrays: each would cost its own small XLA kernel
# launch per call, a few per cent of a (8, 2048, 2048) scan.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _scan(a, x, h0, reverse, target):
  return _forward(a, x, h0, reverse, target)


def _scan_fwd(a, x, h0, reverse, target):
  a, x = a.value, x.value
  h0 = None if h0 is None else h0.value
  y, h_last = _forward(a, x, h0, reverse, target)
  return (y, h_last), (a, y, h0)


def _scan_bwd(reverse, target, residuals, cotangents):
  a, y, h0 = residuals
  g, g_last = cotangents
  g = _instantiate(g, y.dtype).astype(y.dtype)
  g_last = None if _is_zero(g_last) else g_last.astype(jnp.float32)
  da, dx, dh0 = _backward(a, y, h0, g, g_last, reverse, target)
  return da, dx, None if h0 is None else dh0


def _is_zero(t) -> bool:
  return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _instantiate(t, dtype: jnp.dtype) -> jax.Array:
  """A symbolic-zero cotangent as a zero array (the kernels need `g` as an operand)."""
  return jnp.zeros(t.shape, dtype) if _is_zero(t) else t


_scan.defvjp(_scan_fwd, _scan_bwd, symbolic_zeros=True)


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
    if tiling.backward is not None:  # checked with the forward, so that errors come at once
      cls.make(shape, (tiling.backward, platform))
    if tiling.block_len is not None and platform in GPU_PLATFORMS:
      raise ValueError("Triton runs grid steps in parallel: GPU tilings need block_len=None.")
    if platform == "tpu" and (tiling.block_loads or tiling.prefetch or tiling.num_stages != 1):
      raise ValueError(f"Tiling {tiling.spec()}: block loads (b), prefetch (p) and num_stages "
                       "(sN) are Triton options; TPU tilings take none of them.")
    if tiling.block_loads and platform in GPU_PLATFORMS and tiling.unroll & (tiling.unroll - 1):
      raise ValueError(f"Tiling {tiling.spec()}: Triton block loads need a power-of-2 unroll.")
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
    elif self.platform in GPU_PLATFORMS:
      params = plgpu.CompilerParams(num_warps=self.tiling.num_warps,
                                    num_stages=self.tiling.num_stages)
    return pl.pallas_call(kernel, grid=self.grid(batch), in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shapes, compiler_params=params,
                          interpret=self.platform == "cpu")


def _forward(a, x, h0, reverse, target):
  plan = _Plan.make(x.shape, target)
  batch, nb = x.shape[0], plan.num_blocks
  time_block = (lambda s: nb - 1 - s) if reverse else (lambda s: s)
  rows = plan.rows_spec(time_block)
  state = plan.state_spec()
  args = [plan.pad(a, 1.0, reverse), plan.pad(x, 0.0, reverse)]
  if h0 is not None:
    args.append(plan.pad_state(h0))
  kernel = functools.partial(_forward_kernel, reverse=reverse, tiling=plan.tiling)
  y, h_last = plan.call(
      kernel, [rows, rows, state][:len(args)],
      [plan.out_shape(batch, x.dtype),
       jax.ShapeDtypeStruct((batch, 1, plan.padded_width), jnp.float32)],
      [rows, state], batch,
  )(*args)
  return plan.unpad(y, reverse, x.dtype), plan.unpad_state(h_last)


def _backward(a, y, h0, g, g_last, reverse, target):
  tiling, platform = target
  plan = _Plan.make(y.shape, (tiling.for_backward(), platform))
  batch, nb = y.shape[0], plan.num_blocks
  # The backward walks the blocks in the opposite order to the forward.
  time_block = (lambda s: s) if reverse else (lambda s: nb - 1 - s)
  rows = plan.rows_spec(time_block)
  state = plan.state_spec()
  in_specs = [rows, rows, rows]
  args = [plan.pad(a, 1.0, reverse), plan.pad(y, 0.0, reverse), plan.pad(g, 0.0, reverse)]
  for h in (h0, g_last):
    if h is not None:
      in_specs.append(state)
      args.append(plan.pad_state(h))
  if nb > 1:  # The state before each block's first row lives in the neighbouring block.
    per_block, last = plan.block_len // _EDGE_ROWS, plan.padded_len // _EDGE_ROWS - 1
    if reverse:
      edge_block = lambda s: jnp.minimum((time_block(s) + 1) * per_block, last)
    else:
      edge_block = lambda s: jnp.maximum(time_block(s) * per_block - 1, 0)
    in_specs.append(pl.BlockSpec((None, _EDGE_ROWS, plan.tiling.block_width),
                                 lambda b, d, s: (b, edge_block(s), d)))
    args.append(args[1])
  kernel = functools.partial(_backward_kernel, reverse=reverse, tiling=plan.tiling,
                             has_h0=h0 is not None, has_g_last=g_last is not None,
                             has_edge=nb > 1)
  dx, da, dh0 = plan.call(
      kernel, in_specs,
      [plan.out_shape(batch, y.dtype), plan.out_shape(batch, a.dtype),
       jax.ShapeDtypeStruct((batch, 1, plan.padded_width), jnp.float32)],
      [rows, rows, state], batch,
  )(*args)
  return (plan.unpad(da, reverse, a.dtype), plan.unpad(dx, reverse, y.dtype),
          plan.unpad_state(dh0))


def _sweep(load: Callable, update: Callable, carry, count: int, descending: bool, tiling: Tiling):
  """Runs `carry = update(carry, row t of each input as float32, t)` for t over `0 .. count - 1`.

  `load(t, n)` returns each input's rows `t .. t + n - 1`, as an `(n, width)` array or a tuple
  of `n` `(1, width)` rows. Rows go in descending order if `descending`, in groups of
  `tiling.unroll` whose loads are all issued before their updates (one `load(t, unroll)`, split
  into rows in registers, with `tiling.block_loads`). Without `tiling.prefetch` a loop iteration
  loads and updates one group. With it, iteration k handles groups 2k and 2k + 1 in two register
  buffers: load group 2k, update group 2k - 1 (loaded by the previous iteration), load group
  2k + 1, update group 2k; so every wait for a group's rows has the next group's loads in flight
  behind it, and the buffer carried to the next iteration is free before it is reloaded (no
  register copies at the back edge). Iteration 0 only loads, and loads past the last group
  reload it instead. The `count % unroll` rows left over go one per iteration either way.
  """
  unroll = tiling.unroll
  main, rest = divmod(count, unroll)

  def row(i):
    return count - 1 - i if descending else i

  def load_group(g):
    """All inputs of group `g` (rows `row(g * unroll) ..`), as `load` returns them."""
    if tiling.block_loads:
      return load(row(g * unroll + unroll - 1) if descending else row(g * unroll), unroll)
    return [load(row(g * unroll + j), 1) for j in range(unroll)]

  def update_group(carry, g, loaded):
    if tiling.block_loads:
      loaded = list(zip(*(v if isinstance(v, tuple) else jnp.split(v, unroll) for v in loaded)))
      loaded = loaded[::-1] if descending else loaded
    for j, values in enumerate(loaded):
      carry = update(carry, tuple(v.astype(jnp.float32) for v in values), row(g * unroll + j))
    return carry

  if tiling.prefetch and main:
    def body(k, state):
      carry, odd = state
      even = load_group(jnp.minimum(2 * k, main - 1))
      carry = jax.lax.cond(k > 0, lambda c: update_group(c, 2 * k - 1, odd), lambda c: c, carry)
      odd = load_group(jnp.minimum(2 * k + 1, main - 1))
      carry = jax.lax.cond(2 * k < main, lambda c: update_group(c, 2 * k, even), lambda c: c,
                           carry)
      return carry, odd

    # Nothing is loaded before the loop: such loads make Triton's Coalesce pass take minutes.
    nothing = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: load_group(0)))
    carry, _ = jax.lax.fori_loop(0, main // 2 + 1, body, (carry, nothing))
  elif main:
    carry = jax.lax.fori_loop(0, main, lambda g, carry: update_group(carry, g, load_group(g)),
                              carry)

  def single(i, carry):
    t = row(main * unroll + i)
    return update(carry, tuple(v.astype(jnp.float32) for v in load(t, 1)), t)

  return jax.lax.fori_loop(0, rest, single, carry) if rest else carry


def _forward_kernel(a_ref, x_ref, *refs, reverse: bool, tiling: Tiling):
  """One (rows, width) block of the forward scan; `h_ref` carries the state across blocks.

  `refs` is `[h0_ref,] y_ref, h_ref`: without `h0_ref` the state starts at zero.
  """
  h0_ref, y_ref, h_ref = refs if len(refs) == 3 else (None, *refs)

  @pl.when(pl.program_id(2) == 0)
  def _():
    h_ref[...] = jnp.zeros(h_ref.shape, h_ref.dtype) if h0_ref is None else h0_ref[...]

  def update(h, values, t):
    a, x = values
    h = a * h + x
    y_ref[pl.ds(t, 1), :] = h.astype(y_ref.dtype)
    return h

  def load(t, n):
    return a_ref[pl.ds(t, n), :], x_ref[pl.ds(t, n), :]

  h_ref[...] = _sweep(load, update, h_ref[...], a_ref.shape[0], reverse, tiling)


def _backward_kernel(a_ref, y_ref, g_ref, *refs, reverse: bool, tiling: Tiling, has_h0: bool,
                     has_g_last: bool, has_edge: bool):
  """One block of the backward scan (walking opposite to the forward); `dh0_ref` carries `c`.

  `refs` is `[h0_ref,] [g_last_ref,] [edge_ref,] dx_ref, da_ref, dh0_ref` (a missing `h0` or
  `g_last` is zero). `h_{t-1}` is the saved `y` one row back (`step_back`) from t, except for the
  block's last row visited (`edge`), whose lives in the next block (`edge_ref`) or is `h0`: there
  the row read is clamped into the block and its value replaced.
  """
  inputs, (dx_ref, da_ref, dh0_ref) = list(refs[:-3]), refs[-3:]
  h0_ref = inputs.pop(0) if has_h0 else None
  g_last_ref = inputs.pop(0) if has_g_last else None
  edge_ref = inputs.pop(0) if has_edge else None
  rows = a_ref.shape[0]
  edge = rows - 1 if reverse else 0
  state_shape = dh0_ref.shape
  h_edge = h0_ref[...] if has_h0 else jnp.zeros(state_shape, jnp.float32)
  if has_edge:
    outside = edge_ref[pl.ds(0 if reverse else _EDGE_ROWS - 1, 1), :].astype(jnp.float32)
    h_edge = jnp.where(pl.program_id(2) == pl.num_programs(2) - 1, h_edge, outside)

  @pl.when(pl.program_id(2) == 0)
  def _():
    dh0_ref[...] = g_last_ref[...] if has_g_last else jnp.zeros(state_shape, jnp.float32)

  def update(c, values, t):
    a, g, y_back = values
    dh = g + c
    dx_ref[pl.ds(t, 1), :] = dh.astype(dx_ref.dtype)
    da_ref[pl.ds(t, 1), :] = (dh * jnp.where(t == edge, h_edge, y_back)).astype(da_ref.dtype)
    return a * dh

  def y_back(t):
    t = jnp.minimum(t + 1, rows - 1) if reverse else jnp.maximum(t - 1, 0)
    return y_ref[pl.ds(t, 1), :]

  def load(t, n):
    back = y_back(t) if n == 1 else tuple(y_back(t + j) for j in range(n))
    return a_ref[pl.ds(t, n), :], g_ref[pl.ds(t, n), :], back

  dh0_ref[...] = _sweep(load, update, dh0_ref[...], rows, not reverse, tiling)
