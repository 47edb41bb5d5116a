"""The train state (a plain pytree), and the placed model plus optimizer that shapes it."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from birdie_jax.models import build_model
from birdie_jax.models.placed import PlacedModel, place_model
from birdie_jax.parallel.sharding import replicated
from birdie_jax.train.optimizer import make_optimizer


@flax.struct.dataclass
class TrainState:
  """Everything a step updates: params are float32 masters, `rng` feeds stochastic training ops."""
  step: jax.Array
  params: Any
  opt_state: optax.OptState
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainSetup(PlacedModel):
  """A placed model plus what training adds: the optimizer and the whole state's shardings.

  It is a `PlacedModel`, so evaluations take it as they take any placed model."""
  tx: optax.GradientTransformation
  abstract_state: TrainState
  state_shardings: TrainState


def make_train_setup(config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> TrainSetup:
  """Traces the model and its optimizer abstractly (no FLOPs, no memory) and derives every state
  sharding."""
  placed = place_model(config.model, vocab_size, mesh, config.mesh.axis_rules, seed=config.seed)
  abstract_params, param_shardings = placed.abstract_params, placed.param_shardings
  tx = make_optimizer(config.train)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, sharding: sharding, abstract_opt, param_shardings,
      transform_non_params=lambda _: replicated(mesh))
  abstract_state = TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt,
      rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = TrainState(step=replicated(mesh), params=param_shardings, opt_state=opt_shardings,
                         rng=replicated(mesh))
  placed_fields = {f.name: getattr(placed, f.name) for f in dataclasses.fields(PlacedModel)}
  return TrainSetup(**placed_fields, tx=tx, abstract_state=abstract_state,
                    state_shardings=shardings)


def init_train_state(config: ml_collections.ConfigDict, setup: TrainSetup,
                     vocab_size: int, params: Any = None) -> TrainState:
  """Initialises params (or takes `params`, placed params such as `train/init_from.py` loads,
  donated) and the optimizer state directly in their shardings."""

  def init(params) -> TrainState:
    if params is None:
      model = build_model(config.model, vocab_size, rngs=nnx.Rngs(config.seed))
      params = nnx.to_pure_dict(nnx.split(model)[1])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=setup.tx.init(params),
                      rng=jax.random.key_data(jax.random.key(config.seed + 1)).astype(jnp.uint32))

  # On GPU, XLA inlines threefry's 20 unrolled rounds for every parameter and fuses them into a
  # few kernels that grow with depth: compiling them grows faster than depth (Hawk 1.4b on an H100:
  # 7 s at 4 blocks, 144 s at 20). JAX's threefry kernel draws the same bits (identical params) in
  # 10 s of compile at 20 blocks. Its custom call is not partitioned, so each device would draw
  # whole leaves: use it only while no param is sharded. No effect on CPU or TPU.
  sharded = any(not s.is_fully_replicated for s in jax.tree.leaves(setup.state_shardings.params))
  with jax.set_mesh(setup.mesh), _threefry_gpu_kernel(not sharded):
    return jax.jit(init, out_shardings=setup.state_shardings, donate_argnums=0)(params)


@contextlib.contextmanager
def _threefry_gpu_kernel(enabled: bool) -> Iterator[None]:
  """Lowers threefry on GPU to JAX's CUDA kernel while tracing inside (part of jit's cache key)."""
  name = "jax_threefry_gpu_kernel_lowering"
  previous = getattr(jax.config, name)
  jax.config.update(name, enabled)
  try:
    yield
  finally:
    jax.config.update(name, previous)
