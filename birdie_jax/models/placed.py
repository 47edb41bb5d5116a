"""A model placed on a mesh: its structure, axis rules and parameter shardings, without params.

Everything that runs the model on a mesh (training, evaluations, decoding, inference tools) needs
the same static pieces; `place_model` traces the model abstractly (no FLOPs, no memory) and
derives them:

    placed = place_model(config.model, vocab_size, make_mesh(config.mesh.shape),
                         config.mesh.axis_rules, seed=config.seed)
    params = jax.device_put(params, placed.param_shardings)
    with jax.set_mesh(placed.mesh), axis_rules(placed.rules):
      logits = placed.model(params)(inputs, ...)

Training adds the optimizer on top (`train.state.TrainSetup` is a PlacedModel), so evaluations
take a PlacedModel and never depend on training.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from flax import nnx
from jax.sharding import Mesh

from birdie_jax.models import build_model
from birdie_jax.models.layers import count_params
from birdie_jax.parallel.sharding import tree_shardings


@dataclasses.dataclass(frozen=True)
class PlacedModel:
  """The static pieces that run a model on a mesh: structure, rules, parameter layout."""
  graphdef: nnx.GraphDef
  mesh: Mesh
  rules: tuple  # the logical-axis rules table, as tuples (hashable)
  param_shardings: Any  # pure-dict pytree of NamedShardings, shaped as the params
  abstract_params: Any  # pure-dict pytree of ShapeDtypeStructs
  num_params: int

  def model(self, params) -> nnx.Module:
    """The NNX model bound to `params` (a pure dict), for use inside jitted functions."""
    return nnx.merge(self.graphdef, params)


def place_model(model_config, vocab_size: int, mesh: Mesh, rules: Sequence[Sequence],
                *, seed: int) -> PlacedModel:
  """`model_config` (a config's `model` section) traced abstractly on `mesh` with the axis
  `rules` table; `seed` seeds the (abstract) init exactly as the real one will be seeded."""
  rules = tuple(tuple(r) for r in rules)

  def create():
    return build_model(model_config, vocab_size, rngs=nnx.Rngs(seed))

  graphdef, abstract_vars = nnx.split(nnx.eval_shape(create))
  logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_vars))
  abstract_params = nnx.to_pure_dict(abstract_vars)
  return PlacedModel(graphdef=graphdef, mesh=mesh, rules=rules,
                     param_shardings=tree_shardings(logical, abstract_params, mesh, rules),
                     abstract_params=abstract_params, num_params=count_params(abstract_params))
