"""`model.scan_layers`: stacked blocks run by one scan compute what the blocks one by one compute.

Both models are built from the same seed (the blocks are made identically, then stacked), so their
parameters are equal and their logits, gradients and decoding must agree.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdie_jax.config import default_config
from birdie_jax.models import build_model
from birdie_jax.models import presets
from birdie_jax.models.layer_stack import pattern_period, unstack_layers
from models_helpers import VOCAB, birdie_rows
from models_helpers import fast_compile  # noqa: F401  (fixture)
from test_models_decoding import _parallel_and_stepwise, _rows

pytestmark = pytest.mark.usefixtures("fast_compile")

# (family, shape overrides, expected period, repeats, left-over blocks). Griffin is R R A; with
# Birdie layers every 2nd recurrent block (Rb R A Rb R A) its period is 3 blocks, every 3rd
# (Rb R A R Rb A R R A) 9 blocks, so 8 blocks do not repeat and stay unstacked.
CASES = [
    ("hawk", dict(depth=5, bidirectional=True, bidirectional_every=2), 2, 2, 1),
    ("griffin", dict(depth=8, bidirectional=True, bidirectional_every=2, attention_window=6),
     3, 2, 2),
    ("griffin", dict(depth=8, bidirectional=True, bidirectional_every=3, attention_window=6),
     8, 0, 8),
    ("transformer", dict(depth=3), 1, 3, 0),
]


def _model(family: str, overrides: dict, scan: bool, remat: str = "none"):
  cfg = default_config().model
  cfg.update(family=family, preset="tiny", scan_layers=scan, remat=remat)
  cfg = dataclasses.replace(presets.resolve(cfg), **overrides)  # the tiny shape, at this depth
  return build_model(cfg, VOCAB, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("family,overrides,period,repeats,tail", CASES)
def test_layout_follows_the_block_pattern(family, overrides, period, repeats, tail):
  model = _model(family, overrides, scan=True)
  layers = model.blocks.layers()
  assert pattern_period(layers) == period
  assert model.blocks.repeats == repeats and len(model.blocks.tail) == tail
  assert len(model.blocks) == len(layers) == overrides["depth"]
  unscanned = _model(family, overrides, scan=False)
  assert unscanned.blocks.stacked is None and len(unscanned.blocks.tail) == overrides["depth"]
  for a, b in zip(layers, unscanned.blocks.layers()):  # the same blocks, in the same order
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(a)),
                 nnx.to_pure_dict(nnx.state(b)))
  if repeats:  # stacked params carry the layers axis first in their logical names
    specs = jax.tree.leaves(nnx.get_partition_spec(nnx.state(model.blocks.stacked)),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert specs and all(spec[0] == "layers" for spec in specs if len(spec))


@pytest.mark.parametrize("family,overrides", [case[:2] for case in CASES])
def test_unstacked_params_are_the_unscanned_model_s(family, overrides):
  def params(scan: bool):
    return nnx.to_pure_dict(nnx.state(_model(family, overrides, scan=scan)))

  unstacked, expected = unstack_layers(params(True)), params(False)
  assert jax.tree.structure(unstacked) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, unstacked, expected)


@pytest.mark.parametrize("family,overrides,remat", [CASES[0][:2] + ("full",),
                                                    CASES[1][:2] + ("none",)])
def test_scanned_logits_and_gradients_match_blocks_one_by_one(family, overrides, remat):
  batch = birdie_rows(np.random.default_rng(0), 2, ((5, 13), (4, 11)))
  targets = np.roll(batch["inputs"], -1, axis=1)

  def loss_and_grads(scan: bool):
    graphdef, state = nnx.split(_model(family, overrides, scan, remat))

    def loss(state):
      logits = nnx.merge(graphdef, state)(
          batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"],
          prefix_mask=batch["prefix_mask"])
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)), logits

    (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    model = nnx.merge(graphdef, grads)  # gradients laid out as the blocks, in order
    per_block = [nnx.to_pure_dict(nnx.state(b)) for b in model.blocks.layers()]
    return value, logits, per_block

  value, logits, grads = loss_and_grads(True)
  ref_value, ref_logits, ref_grads = loss_and_grads(False)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
  for g, ref in zip(grads, ref_grads):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, ref)


def test_scanned_decoding_with_left_over_blocks_matches_parallel_forward():
  graphdef, state = nnx.split(_model("griffin", CASES[1][1], scan=True))
  run = jax.jit(lambda s, b: _parallel_and_stepwise(nnx.merge(graphdef, s), b))
  batch = _rows()
  parallel, stepwise = (np.asarray(x) for x in run(state, batch))
  real = batch["segment_ids"] > 0
  np.testing.assert_allclose(stepwise[real], parallel[real], rtol=1e-4, atol=1e-4)


def test_scanned_step_writes_new_keys_in_place_of_returning_caches():
  """The scan over stacked layers returns each step's new keys and values, never a whole stacked
  KV cache (which would copy every cache once per generated token)."""
  model = _model("griffin", dict(CASES[1][1], attention_window=64), scan=True)
  batch = {k: v[:, :8] for k, v in _rows().items()}
  _, cache = jax.eval_shape(lambda: model.prefill(
      batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"],
      prefix_mask=batch["prefix_mask"], cache_len=64))
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
  kv_shapes = {leaf.shape for group in cache["blocks"]["stacked"]
               for name, leaf in group.items() if name in ("k", "v")}
  assert kv_shapes and all(shape[2] == 64 for shape in kv_shapes)  # (layers, B, slots, K, H)
  jaxpr = jax.make_jaxpr(model.step)(batch["inputs"][:, -1], cache)
  scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1
  out_shapes = {v.aval.shape for v in scans[0].outvars}
  assert not out_shapes & kv_shapes
  stepped = jax.jit(model.step)(batch["inputs"][:, -1], cache)[1]
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), stepped, cache)
