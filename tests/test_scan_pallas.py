"""`linear_scan(impl="pallas")`: the kernels (interpreted on CPU) against float64 and lax.scan."""
import dataclasses
import functools
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.ops.scan import linear_scan
from birdie_jax.ops.scan_pallas import Tiling, pallas_scan
from test_scan import make_inputs, reference_scan

# The platform default; sequence blocks of 16 rows with a width that needs padding (TPU-style,
# 40 rows = 3 blocks; not on GPU, whose grid steps run in parallel); whole sequence with a row
# count that leaves an unroll tail. Then the GPU options on the 40 rows: prefetch over 13 groups
# of 3 (an odd count) and a tail of 1; block loads in 5 groups of 8; both in 2 groups of 16 and a
# tail of 8; both in one group of 40 (its loads repeated); prefetch with a group longer than the
# sequence (tail only); a forward and a backward tiling of different widths and groups.
_BLOCKED = pytest.param(Tiling(block_width=2, block_len=16, unroll=3), marks=pytest.mark.skipif(
    jax.default_backend() == "gpu", reason="sequence blocks are TPU-only"))
TILINGS = (None, _BLOCKED, Tiling(4, None, 4), *map(Tiling.parse, (
    "4x3x1p", "4x8x1b", "4x16x1bps2", "4x40x1bp", "4x64x1p", "2x8x1bp/4x3x1b")))
LENGTH = 40


def _spec(tiling):
  return tiling.spec() if tiling else "default"


@pytest.mark.parametrize("tiling", TILINGS, ids=_spec)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_float32_matches_reference(tiling, reverse, with_h0):
  a, x, h0 = make_inputs(0, 2, LENGTH, 3, with_h0=with_h0)
  y, h_last = pallas_scan(a, x, h0, reverse=reverse, tiling=tiling)
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  assert y.dtype == jnp.float32 and h_last.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_bfloat16_in_and_out_accumulates_in_float32(reverse):
  a, x, h0 = make_inputs(1, 2, LENGTH, 3, jnp.bfloat16)
  y, h_last = linear_scan(a, x, h0, reverse=reverse, impl="pallas")
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  assert y.dtype == jnp.bfloat16 and h_last.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=2**-8, atol=1e-6)
  np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)


def _grads(scan, reverse, a, x, h0, w, v):
  """Gradients of sum(y*w) + sum(h_last*v) w.r.t. (a, x, h0)."""

  def loss(a, x, h0):
    y, h_last = scan(a, x, h0, reverse)
    return jnp.sum(y.astype(jnp.float32) * w) + jnp.sum(h_last * v)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(a, x, h0)


@pytest.mark.parametrize("tiling", TILINGS, ids=_spec)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_with_resets_match_lax_scan(tiling, reverse):
  a, x, h0 = make_inputs(4, 2, LENGTH, 3)
  a = a.at[:, [0, 7, 16, 17, 39]].set(0.0)  # document resets, at block edges too
  w, v, _ = make_inputs(5, 2, LENGTH, 3)
  expected = _grads(lambda a, x, h0, r: linear_scan(a, x, h0, reverse=r, impl="linear"),
                    reverse, a, x, h0, w, v[:, 0])
  actual = _grads(lambda a, x, h0, r: pallas_scan(a, x, h0, reverse=r, tiling=tiling),
                  reverse, a, x, h0, w, v[:, 0])
  for got, want in zip(actual, expected, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _pallas_operand_counts(fn, *args) -> list[int]:
  """Operand counts of the pallas_calls in `fn`'s jaxpr (forward, then backward)."""
  jaxpr = jax.make_jaxpr(fn)(*args)
  counts = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "pallas_call":
        counts.append(len(eqn.invars))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  return counts


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("used", ["y", "h_last"])
def test_gradients_without_h0_or_with_one_output_unused(reverse, used):
  """No h0 and a loss of y alone (training) or of h_last alone: the zero state and the zero
  cotangent are not passed to the kernels, and the gradients still match lax.scan's."""
  a, x, _ = make_inputs(9, 2, LENGTH, 3)
  a = a.at[:, [0, 17, 39]].set(0.0)
  w, _, _ = make_inputs(10, 2, LENGTH, 3)

  def loss(impl, a, x):
    y, h_last = linear_scan(a, x, reverse=reverse, impl=impl)
    return jnp.sum(y * w) if used == "y" else jnp.sum(h_last * w[:, 0])

  grad = lambda impl: jax.grad(functools.partial(loss, impl), argnums=(0, 1))
  for got, want in zip(grad("pallas")(a, x), grad("linear")(a, x), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Forward: a, x. Backward: a, y, g, plus g_last when h_last is used.
  assert _pallas_operand_counts(grad("pallas"), a, x) == [2, 3 if used == "y" else 4]


@pytest.mark.parametrize("reverse", [False, True])
def test_mixed_dtypes_keep_each_cotangent_dtype(reverse):
  a, _, _ = make_inputs(6, 2, 9, 4)  # float32 decays, bfloat16 drive: the models' layout
  _, x, _ = make_inputs(7, 2, 9, 4, jnp.bfloat16)
  da, dx = jax.grad(lambda a, x: jnp.sum(linear_scan(a, x, reverse=reverse, impl="pallas")[0]
                                         .astype(jnp.float32)), argnums=(0, 1))(a, x)
  assert da.dtype == jnp.float32 and dx.dtype == jnp.bfloat16
  expected = jax.grad(lambda a, x: jnp.sum(linear_scan(a, x, reverse=reverse, impl="linear")[0]
                                           .astype(jnp.float32)), argnums=(0, 1))(a, x)
  # da uses the saved bf16 outputs as h_{t-1}: one bf16 rounding per term.
  np.testing.assert_allclose(da, expected[0], rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(dx.astype(jnp.float32), expected[1].astype(jnp.float32), rtol=2**-7)


def test_tiling_specs_round_trip():
  for spec in ("64x64x1", "256x8x1x256", "64x32x1p", "64x32x2b", "128x16x4bps3", "64x8x1x64s2",
               "64x32x2bp/64x64x4b", "128x16x4bps3/64x8x1x64s2"):
    assert Tiling.parse(spec).spec() == spec
  assert Tiling.parse("64x32x1bps2") == Tiling(64, None, 32, 1, block_loads=True, prefetch=True,
                                               num_stages=2)
  split = Tiling.parse("64x32x2bp/64x64x4b")
  assert split.for_backward() == Tiling(64, None, 64, 4, block_loads=True)
  assert split == dataclasses.replace(Tiling.parse("64x32x2bp"), backward=split.for_backward())
  for bad in ("64x32", "64x32x1pb", "64x32x1s1", "64x032x1", "64x0x1", "64x32x1q", "64x32x1/",
              "64x32x1/64x32x1", "64x32x1/64x8x1/64x4x1", "64x32x1/64x8x1s1"):
    with pytest.raises(ValueError, match="Bad tiling"):
      Tiling.parse(bad)


@pytest.mark.parametrize("platform, spec, message", [
    ("gpu", "2x3x1x16", "block_len=None"),  # Triton runs grid steps in parallel
    ("gpu", "64x24x1b", "power-of-2 unroll"),
    ("tpu", "256x8x1x256p", "TPU tilings take none"),
    ("tpu", "256x8x1x256s2", "TPU tilings take none"),
    ("tpu", "256x8x1x256/256x8x1x256p", "TPU tilings take none"),  # the backward's, at once
    ("gpu", "64x32x1/64x24x1b", "power-of-2 unroll"),
])
def test_platform_rejects_tiling(platform, spec, message):
  a, x, _ = make_inputs(9, 1, 32, 2)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: pallas_scan(a, x, tiling=Tiling.parse(spec), platform=platform))


def test_triton_lowering_takes_gpu_options():
  """Pallas lowers the kernels to Triton IR without a GPU (Triton itself compiles on the GPU);
  the backward kernel gets its own warp count."""
  a = jax.ShapeDtypeStruct((1, 10, 16), jnp.bfloat16)
  tiling = Tiling.parse("16x4x1bps2/16x4x4b")
  for reverse in (False, True):
    fn = lambda a, x: pallas_scan(a, x, reverse=reverse, tiling=tiling, platform="gpu")[0]
    grads = lambda a, x, g: jax.vjp(fn, a, x)[1](g)
    text = jax.jit(grads).trace(a, a, a).lower(lowering_platforms=("cuda",)).as_text()
    assert "__gpu$xla.gpu.triton" in text
    assert re.findall(r"num_warps = (\d+)", text) == ["1", "4"]  # forward, backward


def test_length_one_and_zero():
  a, x, h0 = make_inputs(8, 2, 1, 3)
  y, h_last = linear_scan(a, x, h0, impl="pallas")
  np.testing.assert_allclose(y[:, 0], a[:, 0] * h0 + x[:, 0], rtol=1e-6)
  np.testing.assert_allclose(h_last, y[:, 0], rtol=1e-6)
  y, h_last = linear_scan(a[:, :0], x[:, :0], h0, impl="pallas")
  assert y.shape == (2, 0, 3)
  np.testing.assert_array_equal(h_last, h0)
