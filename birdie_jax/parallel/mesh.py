"""Device meshes from the config's named axis sizes (`-1` fills in the remaining devices).

Axes, outermost first: `data` (replicas), `fsdp` (batch rows, with parameters and optimizer state
split ZeRO-3 style), `sequence` (positions of each row: sequence parallelism, see
`ops/sequence_scan.py`) and `tensor` (the wide model dimensions). What each one splits is the
rules table's business (`mesh.axis_rules`); the inner axes should stay within a host.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from birdie_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "sequence", "tensor")


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Returns the axis sizes with a single `-1` filled in; checks they multiply to `num_devices`."""
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ConfigError(f"mesh.shape has unknown axes {sorted(unknown)}; the axes are {MESH_AXES}")
  sizes = {name: int(shape.get(name, 1)) for name in MESH_AXES}
  fill = [name for name, size in sizes.items() if size == -1]
  bad = [f"{name}={size}" for name, size in sizes.items() if size == 0 or size < -1]
  if bad:
    raise ConfigError(f"mesh.shape sizes must be positive or -1, got {', '.join(bad)}")
  if len(fill) > 1:
    raise ConfigError(f"mesh.shape may have at most one -1 axis, got {fill}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if fill:
    if num_devices % known:
      raise ConfigError(
          f"mesh.shape {dict(shape)} does not divide the {num_devices} devices "
          f"(the fixed axes need a multiple of {known})")
    sizes[fill[0]] = num_devices // known
  elif known != num_devices:
    raise ConfigError(
        f"mesh.shape {dict(shape)} uses {known} devices but {num_devices} are available")
  return sizes


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh over `devices` (default: all) with axes `MESH_AXES`, all `AxisType.Auto`."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(shape, len(devices))
  axis_sizes = tuple(sizes[name] for name in MESH_AXES)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(axis_sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)
  return Mesh(np.asarray(devices).reshape(axis_sizes), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))
