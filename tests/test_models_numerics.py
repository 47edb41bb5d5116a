"""RG-LRU and Gated SSM layers against float64 numpy loops of their recurrences, with document
resets and Birdie's bidirectional split."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdie_jax.models.blocks import Segments
from birdie_jax.models.gated_ssm import GatedSSM
from birdie_jax.models.rglru import RGLRU

WIDTH, LENGTH = 8, 12
# Two documents (columns 0..6, 7..10) and a padding column; prefixes 0..2 and 7..8.
SEGMENT_IDS = np.array([[1] * 7 + [2] * 4 + [0]])
PREFIX = np.array([[1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]], bool)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
  """tanh-approximated GeLU, as jax.nn.gelu computes by default."""
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _reference_scan(a, drive, bidirectional):
  """float64 loop of h_t = a_t h_{t-1} + x_t (forward half) and its prefix-reverse twin, with the
  masks written out position by position."""
  seg, prefix = SEGMENT_IDS[0], PREFIX[0]
  width = a.shape[-1]
  fwd = width // 2 if bidirectional else width
  h = np.zeros(a.shape)
  state = np.zeros(width)
  for t in range(LENGTH):
    keep = t > 0 and seg[t - 1] == seg[t] and seg[t] > 0
    state[:fwd] = (a[t, :fwd] if keep else 0.0) * state[:fwd] + drive[t, :fwd, int(keep)]
    h[t, :fwd] = state[:fwd]
  state = np.zeros(width)
  for t in reversed(range(LENGTH)):
    keep = prefix[t] and t + 1 < LENGTH and seg[t + 1] == seg[t] and seg[t] > 0
    state[fwd:] = (a[t, fwd:] if keep else 0.0) * state[fwd:] + drive[t, fwd:, int(keep)]
    h[t, fwd:] = state[fwd:]
  return h


def _params(module):
  return jax.tree.map(lambda p: np.asarray(p, np.float64),
                      nnx.to_pure_dict(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "birdie"])
def test_rglru_matches_float64_reference(bidirectional):
  with nnx.use_eager_sharding(False):
    layer = RGLRU(WIDTH, 2, bidirectional=bidirectional, rngs=nnx.Rngs(0), dtype=jnp.float32)
  x = np.random.default_rng(0).normal(size=(1, LENGTH, WIDTH)).astype(np.float32)
  y, _ = layer(jnp.asarray(x), jnp.asarray(SEGMENT_IDS), jnp.asarray(PREFIX))
  p = _params(layer)

  def block_diag(v, w, b):
    return (np.einsum("lhi,hij->lhj", v.reshape(LENGTH, 2, -1), w) + b).reshape(LENGTH, WIDTH)

  x64 = x[0].astype(np.float64)
  gate_x = _sigmoid(block_diag(x64, p["input_gate"]["w"], p["input_gate"]["b"]))
  gate_a = _sigmoid(block_diag(x64, p["a_gate"]["w"], p["a_gate"]["b"]))
  a = np.exp(-8.0 * gate_a * np.log1p(np.exp(p["a_param"])))
  # drive[..., 0]: no incoming state (unscaled); drive[..., 1]: continuing (sqrt(1 - a^2) scale).
  drive = np.stack([gate_x * x64, np.sqrt(1 - a**2) * gate_x * x64], axis=-1)
  expected = _reference_scan(a, drive, bidirectional)
  np.testing.assert_allclose(np.asarray(y[0]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "birdie"])
def test_gated_ssm_matches_float64_reference(bidirectional):
  width, state_width = 6, WIDTH
  with nnx.use_eager_sharding(False):
    layer = GatedSSM(width, state_width, bidirectional=bidirectional, rngs=nnx.Rngs(1),
                     dtype=jnp.float32)
  x = np.random.default_rng(1).normal(size=(1, LENGTH, width)).astype(np.float32)
  seg = Segments(jnp.asarray(SEGMENT_IDS), jnp.zeros((1, LENGTH), jnp.int32), jnp.asarray(PREFIX))
  y, _ = layer(jnp.asarray(x), seg)
  p = _params(layer)

  def dense(name):
    return x[0].astype(np.float64) @ p[name]["kernel"] + p[name]["bias"]

  i, z, f = _sigmoid(dense("input_gate")), dense("proj"), _sigmoid(dense("forget_gate"))
  o = _gelu(dense("out_gate"))
  drive = np.repeat((i * z)[..., None], 2, axis=-1)
  h = _reference_scan(f, drive, bidirectional)
  expected = (o * h) @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(np.asarray(y[0]), expected, rtol=1e-5, atol=1e-5)
