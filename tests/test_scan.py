"""Tests for birdie_jax.ops.scan: every implementation against a float64 loop."""

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.ops.scan import ScanImpl, linear_scan

IMPLS = ("associative", "linear", "chunked")
CHUNK = 4  # Divides none of the lengths below, so chunked always pads.


def reference_scan(a, x, h0=None, reverse=False):
  """float64 Python loop for h_t = a_t * h_{t-(+)1} + x_t; returns (y, h_last)."""
  a = np.asarray(a, np.float64)
  x = np.asarray(x, np.float64)
  batch, length, width = x.shape
  h = np.zeros((batch, width)) if h0 is None else np.asarray(h0, np.float64)
  y = np.zeros_like(x)
  for t in (reversed(range(length)) if reverse else range(length)):
    h = a[:, t] * h + x[:, t]
    y[:, t] = h
  return y, h


def make_inputs(seed, batch, length, width, dtype=jnp.float32, with_h0=True):
  """Random a in (-1, 1), x and h0 standard normal, all in `dtype`."""
  rng = np.random.default_rng(seed)
  a = jnp.asarray(rng.uniform(-1.0, 1.0, (batch, length, width)), dtype)
  x = jnp.asarray(rng.standard_normal((batch, length, width)), dtype)
  h0 = jnp.asarray(rng.standard_normal((batch, width)), dtype) if with_h0 else None
  return a, x, h0


@pytest.mark.parametrize("impl", IMPLS + ("auto",))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_float32_matches_reference(impl, reverse, with_h0):
  a, x, h0 = make_inputs(0, 2, 13, 3, with_h0=with_h0)
  y, h_last = linear_scan(a, x, h0, reverse=reverse, impl=impl, chunk_size=CHUNK)
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  assert y.dtype == jnp.float32 and h_last.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_bfloat16_output_is_rounded_float32_result(impl, reverse, with_h0):
  a, x, h0 = make_inputs(1, 2, 13, 3, jnp.bfloat16, with_h0)
  y, h_last = linear_scan(a, x, h0, reverse=reverse, impl=impl, chunk_size=CHUNK)
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  assert y.dtype == jnp.bfloat16 and h_last.dtype == jnp.float32
  # y: one bf16 rounding (relative 2**-8); h_last is float32, so tight.
  np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=2**-8, atol=1e-6)
  np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_long_sequence_accumulates_in_float32(impl):
  rng = np.random.default_rng(2)
  shape = (1, 512, 4)
  a = jnp.asarray(rng.uniform(0.99, 1.0, shape), jnp.bfloat16)
  x = jnp.asarray(rng.uniform(0.0, 1.0, shape), jnp.bfloat16)
  y, _ = linear_scan(a, x, impl=impl, chunk_size=64)
  y_ref, _ = reference_scan(a, x)
  rel_err = np.abs(np.asarray(y, np.float64) - y_ref) / y_ref
  assert rel_err.max() <= 2**-8 + 1e-5  # One bf16 rounding of a float32 result.

  def bf16_step(h, a_x):
    h = a_x[0] * h + a_x[1]
    return h, h

  # The same loop with a bf16 carry: its error compounds along the sequence.
  _, y_bf16 = jax.lax.scan(bf16_step, jnp.zeros(4, jnp.bfloat16), (a[0], x[0]))
  bf16_err = np.abs(np.asarray(y_bf16, np.float64) - y_ref[0]) / y_ref[0]
  assert bf16_err.max() > 10 * rel_err.max()


@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_length_not_a_multiple_and_chunk_longer_than_sequence(reverse):
  a, x, h0 = make_inputs(3, 2, 13, 3)
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  for chunk_size in (5, 64):
    y, h_last = linear_scan(a, x, h0, reverse=reverse, impl="chunked", chunk_size=chunk_size)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)


def _grads(impl, reverse, a, x, h0, w, v):
  """Gradients of sum(y*w) + sum(h_last*v) w.r.t. (a, x, h0)."""

  def loss(a, x, h0):
    y, h_last = linear_scan(a, x, h0, reverse=reverse, impl=impl, chunk_size=CHUNK)
    return jnp.sum(y * w) + jnp.sum(h_last * v)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(a, x, h0)


@pytest.mark.parametrize("impl", ("associative", "chunked"))
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_lax_scan(impl, reverse):
  a, x, h0 = make_inputs(4, 2, 13, 3)
  w, v, _ = make_inputs(5, 2, 13, 3)
  expected = _grads("linear", reverse, a, x, h0, w, v[:, 0])
  actual = _grads(impl, reverse, a, x, h0, w, v[:, 0])
  for got, want in zip(actual, expected, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_zero_decay_resets_the_state(impl, reverse):
  a, x, h0 = make_inputs(6, 2, 13, 3)
  reset = 6
  a = a.at[:, reset].set(0.0)
  # Forward: positions >= reset ignore everything before; reverse: <= reset ignore after.
  before = slice(reset + 1, None) if reverse else slice(None, reset)
  after = slice(None, reset + 1) if reverse else slice(reset, None)
  y, h_last = linear_scan(a, x, h0, reverse=reverse, impl=impl, chunk_size=CHUNK)
  y2, h_last2 = linear_scan(
      a, x.at[:, before].add(1.0), 2 * h0, reverse=reverse, impl=impl, chunk_size=CHUNK)
  np.testing.assert_array_equal(y2[:, after], y[:, after])
  np.testing.assert_array_equal(h_last2, h_last)
  assert not np.allclose(y2[:, before], y[:, before])


@pytest.mark.parametrize("impl", IMPLS)
def test_accepts_enum_members(impl):
  a, x, h0 = make_inputs(7, 1, 5, 2)
  y, _ = linear_scan(a, x, h0, impl=ScanImpl(impl))
  np.testing.assert_allclose(y, reference_scan(a, x, h0)[0], rtol=1e-5, atol=1e-6)


def test_unknown_impl_raises():
  a, x, _ = make_inputs(8, 1, 4, 2)
  with pytest.raises(ValueError, match="associative.*linear.*chunked"):
    linear_scan(a, x, impl="cuda")


@pytest.mark.parametrize(
    "a_shape, x_shape, h0_shape, chunk_size",
    [
        ((2, 4, 3), (2, 5, 3), None, 8),
        ((2, 4), (2, 4), None, 8),
        ((2, 4, 3), (2, 4, 3), (2, 4), 8),
        ((2, 4, 3), (2, 4, 3), None, 0),
    ],
)
def test_bad_arguments_raise(a_shape, x_shape, h0_shape, chunk_size):
  h0 = None if h0_shape is None else jnp.zeros(h0_shape)
  with pytest.raises(ValueError):
    linear_scan(jnp.zeros(a_shape), jnp.zeros(x_shape), h0, chunk_size=chunk_size)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    batch=st.integers(1, 3),
    length=st.integers(0, 40),
    width=st.integers(1, 5),
    chunk_size=st.integers(1, 48),
    reverse=st.booleans(),
    with_h0=st.booleans(),
    seed=st.integers(0, 2**16),
)
@hypothesis.example(batch=1, length=0, width=2, chunk_size=4, reverse=False, with_h0=True, seed=0)
@hypothesis.example(batch=2, length=1, width=3, chunk_size=4, reverse=True, with_h0=True, seed=0)
def test_impls_agree(batch, length, width, chunk_size, reverse, with_h0, seed):
  a, x, h0 = make_inputs(seed, batch, length, width, with_h0=with_h0)
  y_ref, h_ref = reference_scan(a, x, h0, reverse)
  for impl in IMPLS:
    y, h_last = linear_scan(a, x, h0, reverse=reverse, impl=impl, chunk_size=chunk_size)
    assert y.shape == (batch, length, width) and h_last.shape == (batch, width)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=impl)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-5, err_msg=impl)
