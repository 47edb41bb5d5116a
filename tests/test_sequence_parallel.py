"""Sequence parallelism: the scan split over a `sequence` mesh axis of 4 (of 8 emulated devices)
equals the float64 recurrence, values and gradients, both directions, across document resets; a
bidirectional model with its length sharded equals the same model on one device."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from birdie_jax.config import default_config
from birdie_jax.errors import ConfigError
from birdie_jax.models import build_model
from birdie_jax.ops.sequence_scan import sequence_parallel_scan
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding, check_batch_layout, replicated
from birdie_jax.train.state import make_train_setup
from birdie_jax.models.forward import token_losses
from models_helpers import birdie_rows, tiny_model_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")

SHARDS = 4
BATCH, LENGTH, WIDTH = 2, 24, 3  # 6 positions per shard
RESETS = (5, 6, 12, 13, 17)  # a = 0: mid-shard, on shard edges (6, 12) and a shard's last (17)
SPEC = PartitionSpec("data", "sequence", None)


def _order(reverse: bool) -> range:
  return range(LENGTH - 1, -1, -1) if reverse else range(LENGTH)


def reference(a, x, w, v, reverse):
  """float64 (y, h_last) of the recurrence, and the gradients of sum(w * y) + sum(v * h_last)
  with respect to (a, x) by the adjoint recurrence."""
  a, x, w, v = (np.asarray(t, np.float64) for t in (a, x, w, v))
  y = np.zeros_like(x)
  h = np.zeros((BATCH, WIDTH))
  previous = {}
  for t in _order(reverse):
    previous[t] = h
    h = a[:, t] * h + x[:, t]
    y[:, t] = h
  grad_a, grad_x = np.zeros_like(a), np.zeros_like(x)
  adjoint, later = v.copy(), None
  for t in reversed(list(_order(reverse))):
    adjoint = adjoint + w[:, t] if later is None else w[:, t] + a[:, later] * adjoint
    grad_x[:, t] = adjoint
    grad_a[:, t] = adjoint * previous[t]
    later = t
  return y, h, grad_a, grad_x


def _inputs(seed: int):
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1.0, 1.0, (BATCH, LENGTH, WIDTH)).astype(np.float32)
  a[:, RESETS] = 0.0
  x, w = (rng.standard_normal((BATCH, LENGTH, WIDTH)).astype(np.float32) for _ in range(2))
  v = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
  return a, x, w, v


@pytest.mark.parametrize("impl", ["associative", "linear", "pallas"])
@pytest.mark.parametrize("reverse", [False, True])
def test_sharded_scan_and_gradients_match_float64_recurrence(reverse, impl):
  mesh = make_mesh({"data": 2, "sequence": SHARDS})
  a, x, w, v = _inputs(0)

  def loss(a, x, w, v):
    y, h_last = sequence_parallel_scan(a, x, spec=SPEC, reverse=reverse, impl=impl)
    return jnp.sum(w * y) + jnp.sum(v * h_last), (y, h_last)

  sharded = NamedSharding(mesh, SPEC)
  with jax.set_mesh(mesh):
    run = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    args = (jax.device_put(a, sharded), jax.device_put(x, sharded), w, v)
    (_, (y, h_last)), (grad_a, grad_x) = run(*args)
    hlo = run.lower(*args).compile().as_text()
  y_ref, h_ref, grad_a_ref, grad_x_ref = reference(a, x, w, v, reverse)
  assert y.sharding.spec == SPEC and y.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_last, h_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_a, grad_a_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_x, grad_x_ref, rtol=1e-5, atol=1e-5)
  # Only carries cross shards: every gather holds at most (total decay, state) per shard.
  gathered = [np.prod([int(d) for d in dims.split(",") if d]) for dims in
              re.findall(r"= f32\[([\d,]*)\][^=]*all-gather\(", hlo)]
  assert gathered and max(gathered) <= 2 * BATCH * SHARDS * WIDTH


def test_reset_on_a_shard_edge_cuts_the_carry():
  mesh = make_mesh({"data": 2, "sequence": SHARDS})
  a, x, _, _ = _inputs(1)
  a[:, 6] = 0.0  # the first position of shard 1
  x_changed = x.copy()
  x_changed[:, :6] += 10.0  # everything in shard 0
  with jax.set_mesh(mesh):
    scan = jax.jit(functools.partial(sequence_parallel_scan, spec=SPEC))
    y, _ = scan(a, x)
    y_changed, _ = scan(a, x_changed)
  np.testing.assert_array_equal(y[:, 6:], y_changed[:, 6:])
  assert np.all(np.abs(y[:, :6] - y_changed[:, :6]) > 0)


VOCAB = 256


@functools.cache
def _initial_params(family: str) -> dict:
  model = build_model(tiny_model_config(family, True), VOCAB, rngs=nnx.Rngs(0))
  return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _losses_and_grads(family: str, shape: dict[str, int], devices):
  config = default_config()
  config.model.update(tiny_model_config(family, True))
  config.mesh.shape.update(shape)
  mesh = make_mesh(shape, devices=devices)
  setup = make_train_setup(config, VOCAB, mesh)
  # Two documents per row, the first ending mid-shard (position 11), each with a Birdie prefix.
  batch = birdie_rows(np.random.default_rng(0), 2, ((5, 11), (3, 13)))
  batch["inputs"] %= VOCAB
  batch["targets"] = np.roll(batch["inputs"], -1, axis=1)
  batch["loss_mask"] = ((batch["segment_ids"] > 0) & ~batch["prefix_mask"]).astype(np.float32)
  params = jax.device_put(_initial_params(family), setup.state_shardings.params)

  def loss(params, batch):
    losses = token_losses(setup, params, batch)
    return losses.sum() / batch["loss_mask"].sum(), losses

  with jax.set_mesh(mesh):
    batch = {k: jax.device_put(v, batch_sharding(mesh, setup.rules, v.ndim))
             for k, v in batch.items()}
    run = jax.jit(jax.value_and_grad(loss, has_aux=True),
                  in_shardings=(setup.state_shardings.params, None),
                  out_shardings=((replicated(mesh), None), setup.state_shardings.params))
    (_, losses), grads = run(params, batch)
  return losses, jax.device_get(grads)


@pytest.mark.parametrize("family", ["hawk", "griffin"])
def test_model_with_sharded_length_equals_one_device(family):
  losses_1, grads_1 = _losses_and_grads(family, {"data": 1}, jax.devices()[:1])
  losses_8, grads_8 = _losses_and_grads(family, {"data": 1, "sequence": SHARDS, "tensor": 2},
                                        jax.devices())
  assert "sequence" in str(losses_8.sharding.spec)  # the activations really are split
  np.testing.assert_allclose(jax.device_get(losses_8), jax.device_get(losses_1), rtol=1e-5,
                             atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               grads_8, grads_1)


def test_sequence_that_does_not_divide_over_its_axis_is_rejected():
  mesh = make_mesh({"data": 2, "sequence": SHARDS})
  rules = default_config().mesh.axis_rules
  check_batch_layout(mesh, rules, batch_size=4, seq_len=64)
  with pytest.raises(ConfigError, match=r"train\.seq_len \(62\) must be divisible by the 4"):
    check_batch_layout(mesh, rules, batch_size=4, seq_len=62)
