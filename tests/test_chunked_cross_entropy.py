"""`model.loss_chunk`: the chunked cross-entropy (models/chunked_loss.py) equals the plain path
(the whole batch's logits, optax's cross-entropy) in losses and gradients, sharded equals
unsharded (and a float64 reference), the table's gradient is reduced over devices once, not per
chunk, and the compiled loss gradient's temporaries shrink with the chunk."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from birdie_jax.config import default_config, validate_config
from birdie_jax.errors import ConfigError
from birdie_jax.models import build_model
from birdie_jax.models.chunked_loss import chunk_layout, chunked_token_losses
from birdie_jax.models.forward import token_losses
from birdie_jax.models.layers import Embedder
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.identity import IDENTITY_KEYS
from birdie_jax.train.state import make_train_setup
from birdie_jax.train.step import mean_loss
from models_helpers import birdie_rows
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _ragged_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
  """About 70% of tokens weighted, one row with none and one with a single token."""
  mask = (rng.random(shape) < 0.7).astype(np.float32)
  mask[0] = 0.0
  mask[1] = 0.0
  mask[1, shape[1] // 2] = 1.0
  return mask


def test_chunk_layout_pads_less_than_one_position_per_chunk():
  for length in (1, 7, 37, 64, 100):
    for chunk in (1, 3, 8, 64, 200):
      n, w = chunk_layout(length, chunk)
      assert w <= chunk and 0 <= n * w - length < n, (length, chunk, n, w)
  with pytest.raises(ValueError):
    chunk_layout(10, 0)


@pytest.mark.parametrize("dtype,soft_cap,chunks", [("float32", 0.0, (8,)),
                                                   ("float32", 5.0, (1, 8, 64)),
                                                   ("bfloat16", 5.0, (8,))])
def test_losses_and_gradients_equal_plain_path(dtype, soft_cap, chunks):
  """The model's own `Embedder.decode` on random hidden states: a vocabulary (101) and length
  (37) no chunk divides, ragged masks; chunks of 1, 8 (5 chunks, 3 padded positions) and more
  than the length."""
  batch, length, width, vocab = 3, 37, 16, 101
  compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  with nnx.use_eager_sharding(False):
    embed = Embedder(vocab, width, rngs=nnx.Rngs(0), dtype=compute, soft_cap=soft_cap)
  graphdef, table = nnx.split(embed)
  rng = np.random.default_rng(1)
  # Hidden states of RMS ~ 3 make logits of a few units: the soft cap (5) bends them.
  hidden = jnp.asarray(3.0 * rng.standard_normal((batch, length, width)), compute)
  targets = jnp.asarray(rng.integers(0, vocab, (batch, length)), jnp.int32)
  mask = jnp.asarray(_ragged_mask(rng, (batch, length)))

  def plain(table, hidden):
    logits = nnx.merge(graphdef, table).decode(hidden)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets) * mask

  def chunked(chunk, table, hidden):
    return chunked_token_losses(lambda table, x: nnx.merge(graphdef, table).decode(x), table,
                                hidden, targets, mask, chunk=chunk)

  def mean_and_grads(losses_fn, table, hidden):
    def mean(table, hidden):
      losses = losses_fn(table, hidden)
      return jnp.sum(losses) / jnp.sum(mask), losses
    return jax.value_and_grad(mean, argnums=(0, 1), has_aux=True)(table, hidden)

  @jax.jit
  def run(table, hidden):
    return [mean_and_grads(fn, table, hidden) for fn in
            (plain, *(functools.partial(chunked, c) for c in chunks))]

  (_, ref_losses), ref_grads = run(table, hidden)[0]
  assert np.all(np.asarray(ref_losses)[0] == 0) and np.count_nonzero(ref_losses[1]) == 1
  if soft_cap:  # the cap is really on: some logit is bent by more than 5%
    logits = jnp.einsum("bld,vd->blv", hidden.astype(jnp.float32), table["table"][...])
    assert float(jnp.max(jnp.abs(logits))) > 1.5 * soft_cap
  loose = dtype == "bfloat16"
  for (_, losses), grads in run(table, hidden)[1:]:
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-6)
    grad_tol = dict(rtol=1e-2, atol=1e-3) if loose else dict(rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[0]["table"][...], ref_grads[0]["table"][...], **grad_tol)
    np.testing.assert_allclose(np.asarray(grads[1], np.float32),
                               np.asarray(ref_grads[1], np.float32), **grad_tol)


VOCAB = 256  # divisible by the tensor axis, so the embedding and each chunk's logits are split
CHUNK = 6  # rows of 16 positions: 3 chunks of 6, 2 of them padding


def _model_config():
  """A one-block Gated SSM with the soft cap on (3: its largest raw logits, about 5, are bent)."""
  config = default_config()
  config.model.update(family="gated_ssm", bidirectional=True, width=16, depth=1, lru_width=16,
                      logits_soft_cap=3.0, scan_impl="linear")
  return config


def _batch() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  batch = birdie_rows(rng, 4, ((4, 9), (3, 7)))
  batch["inputs"] %= VOCAB
  batch["targets"] = rng.integers(0, VOCAB, batch["inputs"].shape).astype(np.int32)
  keep = (batch["segment_ids"] > 0) & ~batch["prefix_mask"]
  batch["loss_mask"] = (keep & (rng.random(keep.shape) < 0.8)).astype(np.float32)
  batch["loss_mask"][2, 5:] = 0.0
  return batch


@functools.cache
def _initial_params() -> dict:
  """The model's float32 params as numpy, initialised once on the host."""
  model = build_model(_model_config().model, VOCAB, rngs=nnx.Rngs(0))
  return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _losses_and_grads(shape: dict[str, int], devices, chunks: tuple[int, ...]):
  """`token_losses` and the gradient of the mean loss for each `loss_chunk` in `chunks` (one
  program), on a mesh of `shape`; the params' partition specs; the compiled program's text."""
  config = _model_config()
  config.mesh.shape.update(shape)
  mesh = make_mesh(shape, devices=devices)
  setup = make_train_setup(config, VOCAB, mesh)
  params = jax.device_put(_initial_params(), setup.param_shardings)

  def mean(params, batch, chunk):
    losses = token_losses(setup, params, batch, loss_chunk=chunk)
    return losses.sum() / batch["loss_mask"].sum(), losses

  def run(params, batch):
    return [jax.value_and_grad(mean, has_aux=True)(params, batch, c) for c in chunks]

  with jax.set_mesh(mesh):
    batch = {k: jax.device_put(v, batch_sharding(mesh, setup.rules, v.ndim))
             for k, v in _batch().items()}
    compiled = jax.jit(run, in_shardings=(setup.param_shardings, None)).lower(
        params, batch).compile()
    out = compiled(params, batch)
  specs = {str(x.spec) for x in jax.tree.leaves(setup.param_shardings)}
  results = [(jax.device_get(losses), jax.device_get(grads)) for (_, losses), grads in out]
  return results, specs, compiled.as_text()


def _loop_all_reduces(hlo: str) -> list[str]:
  """The result shapes of the all-reduces inside while-loop bodies of a compiled HLO module."""
  bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
  shapes = []
  for computation in re.split(r"\n(?=\S)", hlo):
    if computation.split(" ", 1)[0].lstrip("%") in bodies:
      shapes += re.findall(r"= (\S+|\([^)]*\)) all-reduce(?:-start)?\(", computation)
  return shapes


def test_model_gradients_equal_plain_path_and_sharded_equals_unsharded():
  """Through `token_losses` (training's and evaluation's loss) on the real model: the chunked
  losses and parameter gradients (the tied embedding's from both ends) equal the plain path's on
  one device, and on the (data=2, fsdp=2, tensor=2) mesh equal one device's. The table's
  gradient is all-reduced after the chunk loop, not inside it (the loop's all-reduces are the
  vocabulary split's, B x chunk wide)."""
  assert jax.device_count() == 8
  single, _, _ = _losses_and_grads({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1],
                                   (0, CHUNK))
  (plain_losses, plain_grads), (losses_1, grads_1) = single
  batch = _batch()
  assert np.all(plain_losses[batch["loss_mask"] == 0] == 0)
  assert np.all(plain_losses[batch["loss_mask"] > 0] > 0)
  np.testing.assert_allclose(losses_1, plain_losses, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads_1, plain_grads)
  table = f"[{VOCAB // 2},16]"  # a device's share of the table (vocab over tensor 2, width 16)
  sharded, specs, hlo = _losses_and_grads({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices(),
                                          (CHUNK,))
  assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)
  (losses_8, grads_8), = sharded
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               grads_8, grads_1)
  in_loop = _loop_all_reduces(hlo)
  assert in_loop and not any(table in s for s in in_loop), in_loop


def _float64_reference(hidden, table, targets, mask, soft_cap):
  """Per-token losses and the mean loss's gradients (table, hidden) in float64, by hand."""
  hidden, table = np.float64(hidden), np.float64(table)
  raw = hidden @ table.T
  logits = soft_cap * np.tanh(raw / soft_cap)
  top = logits.max(-1, keepdims=True)
  lse = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
  picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  losses = (lse - picked) * mask
  softmax = np.exp(logits - lse[..., None])
  onehot = np.eye(table.shape[0])[targets]
  d_logits = (softmax - onehot) * (mask / mask.sum())[..., None]
  d_raw = d_logits * (1.0 - np.tanh(raw / soft_cap) ** 2)
  return losses, np.einsum("blv,bld->vd", d_raw, hidden), d_raw @ table


def test_rows_and_positions_split_equal_a_float64_reference():
  """On a (data=2, sequence=2, tensor=2) mesh: rows, positions (36 -> 18 a device, chunks of 5:
  4 chunks, 2 padded positions) and the vocabulary split; losses and gradients equal a float64
  reference, and the table's gradient is all-reduced after the chunk loop, not in it."""
  batch, length, width, vocab, soft_cap = 4, 36, 16, 64, 5.0
  with nnx.use_eager_sharding(False):
    embed = Embedder(vocab, width, rngs=nnx.Rngs(0), dtype=jnp.float32, soft_cap=soft_cap)
  graphdef, table = nnx.split(embed)
  rng = np.random.default_rng(2)
  hidden = np.float32(3.0 * rng.standard_normal((batch, length, width)))
  targets = rng.integers(0, vocab, (batch, length)).astype(np.int32)
  mask = _ragged_mask(rng, (batch, length))
  rules = default_config().mesh.axis_rules
  mesh = make_mesh({"data": 2, "sequence": 2, "tensor": 2})
  rows = NamedSharding(mesh, PartitionSpec("data", "sequence"))

  def mean(table, hidden, targets, mask):
    losses = chunked_token_losses(lambda table, x: nnx.merge(graphdef, table).decode(x), table,
                                  hidden, targets, mask, chunk=5, rules=rules)
    return jnp.sum(losses) / jnp.sum(mask), losses

  with jax.set_mesh(mesh):
    args = (jax.device_put(table, NamedSharding(mesh, PartitionSpec("tensor", None))),
            jax.device_put(hidden, rows), jax.device_put(targets, rows),
            jax.device_put(mask, rows))
    compiled = jax.jit(jax.value_and_grad(mean, argnums=(0, 1), has_aux=True)).lower(
        *args).compile()
    (_, losses), (d_table, d_hidden) = compiled(*args)
  ref_losses, ref_table, ref_hidden = _float64_reference(
      hidden, np.asarray(table["table"][...]), targets, mask, soft_cap)
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(d_table["table"][...], ref_table, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(d_hidden, ref_hidden, rtol=1e-4, atol=1e-8)
  in_loop = _loop_all_reduces(compiled.as_text())
  assert in_loop and not any(f"[{vocab // 2},{width}]" in s for s in in_loop), in_loop


def test_loss_gradient_temporaries_shrink_with_the_chunk():
  """Where the logits dominate (vocab 8192, 4 x 512 tokens, width 16: float32 logits of 64 MiB),
  the compiled gradient of the train step's loss (`train.step.mean_loss`) needs a fraction of
  the plain path's temporary memory: about one chunk's logits (4 x 64 x 8192) a few times."""
  vocab, rows, length = 8192, 4, 512
  temps = {}
  for chunk in (0, 64):
    config = default_config()
    config.model.update(family="gated_ssm", width=16, depth=1, lru_width=16, loss_chunk=chunk,
                        scan_impl="linear")
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    setup = make_train_setup(config, vocab, mesh)
    batch = {k: jax.ShapeDtypeStruct((rows, length), dtype) for k, dtype in
             (("inputs", jnp.int32), ("targets", jnp.int32), ("loss_mask", jnp.float32),
              ("segment_ids", jnp.int32), ("positions", jnp.int32), ("prefix_mask", bool))}
    grad = jax.jit(jax.grad(lambda p, b: mean_loss(setup, p, b)[0]))
    with jax.set_mesh(mesh):
      compiled = grad.lower(setup.abstract_params, batch).compile()
    temps[chunk] = compiled.memory_analysis().temp_size_in_bytes
  logits_bytes = rows * length * vocab * 4
  assert temps[0] > logits_bytes  # the plain path holds the logits (and their gradient)
  assert temps[64] < 0.4 * temps[0] and temps[64] < 0.5 * logits_bytes, temps


def test_loss_chunk_is_a_validated_knob_not_identity():
  """`model.loss_chunk` changes float rounding only: a resumed run may change it; negative is
  refused in one line."""
  assert "model.loss_chunk" not in IDENTITY_KEYS
  config = default_config()
  config.model.loss_chunk = -1
  with pytest.raises(ConfigError, match="model.loss_chunk must be non-negative"):
    validate_config(config)
