"""Logical axis names -> mesh axes, through the one rules table held in the config.

Parameters carry logical names (`nnx.with_partitioning(init, ("embed", "mlp"))`); activations are
constrained with `constrain(x, ("batch", "length", "act_embed"))`. `axis_rules(rules)` makes a rules
table current for `constrain`; outside a mesh it is a no-op, so the same model code runs on one device.
Layers that need to know an activation's layout (the sequence-parallel scan) ask `activation_spec`.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from birdie_jax.errors import ConfigError

Rules = Sequence[tuple[str, str | Sequence[str] | None]]

# Logical names used by the models. Every name must appear in the config's rules table.
LOGICAL_AXES = ("batch", "length", "embed", "act_embed", "mlp", "lru", "heads", "kv_heads",
                "head_dim", "vocab", "conv", "layers")

_state = threading.local()


def _rules_dict(rules: Rules) -> dict[str, tuple[str, ...]]:
  table = {}
  for name, target in rules:
    if target is None:
      table[name] = ()
    elif isinstance(target, str):
      table[name] = (target,)
    else:
      table[name] = tuple(target)
  return table


def validate_rules(rules: Rules, mesh_axes: Sequence[str]) -> None:
  """Checks the rules table: every logical name known and mapped, every target a mesh axis."""
  table = _rules_dict(rules)
  missing = [name for name in LOGICAL_AXES if name not in table]
  if missing:
    raise ConfigError(f"mesh.axis_rules has no entry for logical axes {missing}")
  for name, targets in table.items():
    bad = [t for t in targets if t not in mesh_axes]
    if bad:
      raise ConfigError(f"mesh.axis_rules maps {name!r} to unknown mesh axes {bad}; "
                        f"mesh axes are {tuple(mesh_axes)}")


def logical_to_spec(names: Sequence[str | None], rules: Rules,
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> PartitionSpec:
  """Maps logical names to a PartitionSpec.

  A mesh axis is used at most once per spec (first dimension wins). With `shape` and `mesh` given,
  mesh axes whose size does not divide the dimension are dropped, so tiny models stay valid on any
  mesh (that dimension is then replicated along those axes). With `mesh` given, axes it does not
  have are dropped too.
  """
  table = _rules_dict(rules)
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(names):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ConfigError(f"logical axis {name!r} has no entry in mesh.axis_rules")
    axes = []
    size = shape[dim] if shape is not None else None
    for axis in table[name]:
      if axis in used or (mesh is not None and axis not in mesh.shape):
        continue
      if mesh is not None and size is not None:
        span = mesh.shape[axis] * math.prod(mesh.shape[a] for a in axes)
        if size % span:
          continue
      axes.append(axis)
      used.add(axis)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*spec)


@contextlib.contextmanager
def axis_rules(rules: Rules) -> Iterator[None]:
  """Makes `rules` the current table for `constrain` (thread-local, nestable)."""
  previous = getattr(_state, "rules", None)
  _state.rules = tuple(rules)
  try:
    yield
  finally:
    _state.rules = previous


def activation_spec(names: Sequence[str | None],
                    shape: Sequence[int]) -> PartitionSpec | None:
  """The PartitionSpec of an activation of `shape` named `names` on the current mesh and rules
  (what `constrain` applies), or None outside a mesh or rules table."""
  rules = getattr(_state, "rules", None)
  mesh = jax.sharding.get_abstract_mesh()
  if rules is None or mesh.empty:
    return None
  return logical_to_spec(names, rules, shape, mesh)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op without a mesh or rules."""
  spec = activation_spec(names, x.shape)
  if spec is None:
    return x
  return jax.lax.with_sharding_constraint(x, spec)


def tree_shardings(logical_specs, abstract_values, mesh: Mesh, rules: Rules):
  """NamedShardings for a pytree, from matching trees of logical PartitionSpecs and shapes."""

  def one(names: PartitionSpec, value) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(tuple(names), rules, value.shape, mesh))

  return jax.tree.map(one, logical_specs, abstract_values,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
  """A fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a `(batch, length, ...)` input array: batch over the rules' batch axes, whole
  rows per device (each process feeds whole rows; the model splits the length itself)."""
  spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), rules, mesh=mesh)
  return NamedSharding(mesh, spec)


def check_batch_layout(mesh: Mesh, rules: Rules, batch_size: int, seq_len: int) -> None:
  """Raises ConfigError unless the rows split over the mesh as the processes feed them.

  `seq_len` must divide over the mesh axes of `length`, and no batch row may live on devices of
  two processes: each process reads its own documents into the rows of its own devices.
  """
  length_axes = [a for a in _rules_dict(rules).get("length", ()) if a in mesh.shape]
  span = math.prod(mesh.shape[a] for a in length_axes)
  if seq_len % span:
    raise ConfigError(f"train.seq_len ({seq_len}) must be divisible by the {span} devices the "
                      f"sequence is split over (mesh axes {length_axes})")
  owners: dict[tuple[int, int], set[int]] = {}
  indices = batch_sharding(mesh, rules).devices_indices_map((batch_size, seq_len))
  for device, index in indices.items():
    rows = index[0].indices(batch_size)[:2]
    owners.setdefault(rows, set()).add(device.process_index)
  if any(len(processes) > 1 for processes in owners.values()):
    hosts = len({device.process_index for device in mesh.devices.flat})
    raise ConfigError(
        f"mesh.shape {dict(mesh.shape)} puts batch rows on the devices of several processes: the "
        f"batch axes (data x fsdp) must split the {hosts} processes' devices, with sequence and "
        f"tensor within a process ({mesh.devices.size // hosts} devices each)")
