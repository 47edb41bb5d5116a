"""`linear_scan(impl="pallas")`: the kernels (interpreted on CPU) against float64 and lax.scan."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.ops.scan import linear_scan
from birdie_jax.ops.scan_pallas import Tiling, pallas_scan
from test_scan import make_inputs, reference_scan

# The platform default; sequence blocks of 16 rows with a width that needs padding (TPU-style,
# 40 rows = 3 blocks; not on GPU, whose grid steps run in parallel); whole sequence with a row
# count that leaves an unroll tail.
_BLOCKED = pytest.param(Tiling(block_width=2, block_len=16, unroll=3), marks=pytest.mark.skipif(
    jax.default_backend() == "gpu", reason="sequence blocks are TPU-only"))
TILINGS = (None, _BLOCKED, Tiling(4, None, 4))
LENGTH = 40


@pytest.mark.parametrize("tiling", TILINGS)
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


@pytest.mark.parametrize("tiling", TILINGS)
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


def test_gpu_rejects_sequence_blocks():
  a, x, _ = make_inputs(9, 1, 32, 2)
  with pytest.raises(ValueError, match="block_len=None"):
    jax.eval_shape(lambda: pallas_scan(a, x, tiling=TILINGS[1].values[0], platform="gpu"))


def test_length_one_and_zero():
  a, x, h0 = make_inputs(8, 2, 1, 3)
  y, h_last = linear_scan(a, x, h0, impl="pallas")
  np.testing.assert_allclose(y[:, 0], a[:, 0] * h0 + x[:, 0], rtol=1e-6)
  np.testing.assert_allclose(h_last, y[:, 0], rtol=1e-6)
  y, h_last = linear_scan(a[:, :0], x[:, :0], h0, impl="pallas")
  assert y.shape == (2, 0, 3)
  np.testing.assert_array_equal(h_last, h0)
