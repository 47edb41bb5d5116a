"""The jitted train step: sharded equals unsharded, and packed documents stay independent."""
import jax
import numpy as np
import pytest
from flax import nnx

from birdie_jax.models import build_model
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step
from helpers import packed_batch, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")

VOCAB = 300


def _run_steps(config, devices, batches, steps=2):
  mesh = make_mesh(config.mesh.shape, devices=devices)
  setup = make_train_setup(config, VOCAB, mesh)
  state = init_train_state(config, setup, VOCAB)
  initial = jax.device_get(state.params)
  step = make_train_step(setup, config.train)
  losses = []
  with jax.set_mesh(mesh):
    for batch in batches[:steps]:
      global_batch = {k: jax.device_put(v, batch_sharding(mesh, setup.rules, v.ndim))
                      for k, v in batch.items()}
      state, metrics = step(state, global_batch)
      losses.append(float(metrics["loss"]))
  return initial, jax.device_get(state.params), losses, state


def test_sharded_step_equals_single_device():
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  batches = [packed_batch(rng, 8, 64, VOCAB, (20, 30, 14)) for _ in range(2)]
  init_1, params_1, losses_1, _ = _run_steps(tiny_config(data=1), jax.devices()[:1], batches)
  config = tiny_config(data=2, fsdp=2, tensor=2)
  init_8, params_8, losses_8, state_8 = _run_steps(config, jax.devices(), batches)
  # The sharded run really is sharded: some parameter is split over fsdp and tensor.
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(state_8.params)}
  assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), init_1, init_8)
  np.testing.assert_allclose(losses_1, losses_8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               params_1, params_8)
  assert losses_1[1] < losses_1[0]


DOCS = (17, 19, 12)  # document 2 spans columns 17..35
PREFIX = 5  # bidirectional runs: each document's first 5 tokens are its prefix (read both ways)


def _variants(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """One packed row three times: as drawn, with document 2 rewritten, with only its token 3
  changed (every changed token differs from the original)."""
  batch = packed_batch(rng, 1, sum(DOCS), VOCAB, DOCS)
  batch = {k: np.repeat(v, 3, axis=0) for k, v in batch.items()}
  inputs = batch["inputs"]
  inputs[1, 17:36] = (inputs[1, 17:36] + rng.integers(1, VOCAB - 1, 19)) % VOCAB
  inputs[2, 20] = (inputs[2, 20] + 1 + rng.integers(0, VOCAB - 2)) % VOCAB
  return batch


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("family", ["hawk", "gated_ssm", "griffin", "transformer"])
def test_packed_documents_do_not_interact(family, bidirectional):
  config = tiny_config(data=1)
  config.model.update(family=family, preset="tiny", bidirectional=bidirectional)
  model = build_model(config.model, VOCAB, rngs=nnx.Rngs(0))
  batch = _variants(np.random.default_rng(1))
  if bidirectional:
    batch["prefix_mask"] = (batch["positions"] < PREFIX) & (batch["segment_ids"] > 0)
  base, rewritten, one = np.asarray(model(
      batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"],
      prefix_mask=batch["prefix_mask"]))
  for out in (rewritten, one):
    np.testing.assert_array_equal(out[:17], base[:17])   # document 1 untouched
    np.testing.assert_array_equal(out[36:], base[36:])   # document 3 untouched
    assert np.abs(out[20:36] - base[20:36]).max() > 1e-4  # document 2 did change
  # Editing token 3 of document 2 (a prefix token when bidirectional) reaches the positions before
  # it only if the prefix is read both ways.
  before = np.abs(one[17:20] - base[17:20]).max()
  assert before > 0 if bidirectional else before == 0


def test_weight_decay_skips_norms_biases_and_recurrence_gates():
  from birdie_jax.train.optimizer import weight_decay_mask
  params = {"blocks": {"0": {"mixer": {"lru": {"a_gate": {"w": np.zeros((2, 4, 4))},
                                               "a_param": np.zeros(8)},
                                       "forget_gate": {"kernel": np.zeros((4, 8))},
                                       "proj": {"kernel": np.zeros((4, 8)), "bias": np.zeros(8)}},
                             "mixer_norm": {"scale": np.zeros(4)}}},
            "embed": {"table": np.zeros((10, 4))}}
  mask = weight_decay_mask(params)
  block = mask["blocks"]["0"]
  assert mask["embed"]["table"] and block["mixer"]["proj"]["kernel"]
  assert not block["mixer"]["proj"]["bias"] and not block["mixer_norm"]["scale"]
  assert not block["mixer"]["lru"]["a_gate"]["w"] and not block["mixer"]["lru"]["a_param"]
  assert not block["mixer"]["forget_gate"]["kernel"]
  # Stacked blocks (model.scan_layers) carry a leading layers axis that does not count.
  stacked = {"blocks": {"stacked": {"0": {"proj": {"kernel": np.zeros((3, 4, 8)),
                                                   "bias": np.zeros((3, 8))}}}}}
  mask = weight_decay_mask(stacked)["blocks"]["stacked"]["0"]["proj"]
  assert mask["kernel"] and not mask["bias"]
