"""`model.remat` policies recompute the forward in the backward pass; values and gradients must
not change."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdie_jax.models import build_model
from models_helpers import VOCAB, birdie_rows, fast_compile, tiny_model_config  # noqa: F401


def _loss_and_grads(family: str, remat: str, batch: dict[str, np.ndarray]):
  cfg = tiny_model_config(family, bidirectional=True)
  cfg.remat = remat
  graphdef, params = nnx.split(build_model(cfg, VOCAB, rngs=nnx.Rngs(0)))

  def loss(p):
    logits = nnx.merge(graphdef, p)(batch["inputs"], segment_ids=batch["segment_ids"],
                                    positions=batch["positions"],
                                    prefix_mask=batch["prefix_mask"])
    return jnp.mean(jax.nn.log_softmax(logits)[..., 1])

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  return value, nnx.to_pure_dict(grads)


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("family", ["hawk"])  # the wrapper in lm.py is shared by every family
@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_loss_and_gradients(family, remat):
  batch = {k: jnp.asarray(v) for k, v in
           birdie_rows(np.random.default_rng(0), 2, ((3, 9), (2, 7))).items()}
  value, grads = _loss_and_grads(family, "none", batch)
  remat_value, remat_grads = _loss_and_grads(family, remat, batch)
  np.testing.assert_allclose(remat_value, value, rtol=1e-6)
  flat, remat_flat = jax.tree.leaves(grads), jax.tree.leaves(remat_grads)
  assert len(flat) == len(remat_flat) and any(np.abs(g).max() > 0 for g in flat)
  for g, rg in zip(flat, remat_flat):
    np.testing.assert_allclose(rg, g, rtol=1e-5, atol=1e-7)
