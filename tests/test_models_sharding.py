"""Every family's forward and gradient on a (data=2, fsdp=2, tensor=2) mesh equal one device's."""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from birdie_jax.config import default_config
from birdie_jax.models import build_model
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding, replicated
from birdie_jax.train.state import make_train_setup
from birdie_jax.models.forward import token_losses
from models_helpers import FAMILIES, birdie_rows, tiny_model_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")

VOCAB = 256  # divisible by the tensor axis, so the embedding really is split


def _batch() -> dict[str, np.ndarray]:
  batch = birdie_rows(np.random.default_rng(0), 4, ((4, 9), (3, 7)))
  batch["inputs"] %= VOCAB
  batch["targets"] = np.roll(batch["inputs"], -1, axis=1)
  batch["loss_mask"] = ((batch["segment_ids"] > 0) & ~batch["prefix_mask"]).astype(np.float32)
  return batch


@functools.cache
def _initial_params(family: str) -> dict:
  """The tiny model's float32 params as numpy, initialised once on the host."""
  model = build_model(tiny_model_config(family, True), VOCAB, rngs=nnx.Rngs(0))
  return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _forward_and_grads(family: str, shape: dict[str, int], devices):
  config = default_config()
  config.model.update(tiny_model_config(family, True))
  config.mesh.shape.update(shape)
  mesh = make_mesh(shape, devices=devices)
  setup = make_train_setup(config, VOCAB, mesh)
  params = jax.device_put(_initial_params(family), setup.state_shardings.params)

  def loss(params, batch):
    losses = token_losses(setup, params, batch)
    return losses.sum() / batch["loss_mask"].sum(), losses

  with jax.set_mesh(mesh):
    batch = {k: jax.device_put(v, batch_sharding(mesh, setup.rules, v.ndim))
             for k, v in _batch().items()}
    run = jax.jit(jax.value_and_grad(loss, has_aux=True),
                  in_shardings=(setup.state_shardings.params, None),
                  out_shardings=((replicated(mesh), None), setup.state_shardings.params))
    (_, losses), grads = run(params, batch)
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(grads)}
  return jax.device_get(losses), jax.device_get(grads), specs


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_forward_and_gradient_equal_single_device(family):
  assert jax.device_count() == 8
  losses_1, grads_1, _ = _forward_and_grads(family, {"data": 1, "fsdp": 1, "tensor": 1},
                                            jax.devices()[:1])
  losses_8, grads_8, specs = _forward_and_grads(family, {"data": 2, "fsdp": 2, "tensor": 2},
                                                jax.devices())
  assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               grads_8, grads_1)
