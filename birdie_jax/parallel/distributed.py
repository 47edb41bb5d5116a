"""Joining a multi-process run: `jax.distributed.initialize`, once, before JAX touches a device.

Where the settings come from (the first that applies):
  1. Explicit: `--num_processes N --process_id I --coordinator_address HOST:PORT` (flags of
     `birdie_jax.main`), or the environment variables `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`,
     `JAX_COORDINATOR_ADDRESS` (a flag wins over its variable). For multi-process GPU or CPU runs
     under any launcher; `HOST:PORT` is process 0's address, the same on every process.
     `--num_processes=1` means one process and turns detection off.
  2. A cluster that JAX's own detection knows (`jax.distributed.initialize()` with no arguments):
     a Cloud TPU VM (libtpu installed and TPU chips attached; on a pod slice every host runs the
     same command), a SLURM job step (`srun`) with more than one task, an Open MPI job (`mpirun`)
     with more than one rank.
  3. Otherwise one process, and nothing is initialised.

Every process then runs the same program on its own devices; `jax.process_index()` and
`jax.process_count()` tell the training loop which share of the data to read and who writes logs.
On CPU, processes exchange collectives through Gloo (`jax_cpu_collectives_implementation`,
the default in the pinned JAX), and the persistent compilation cache is turned off: only process 0
writes it, so only process 0 finds entries there, and a train step it loaded from the cache hung
against the same step that process 1 had just compiled (jax 0.10.2, CPU).
"""
from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import jax

from birdie_jax.errors import ConfigError

_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}
# The variables JAX's SLURM and Open MPI detection reads (jax._src.clusters), besides task counts.
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
_OPEN_MPI = ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def _cluster_detected(environ: Mapping[str, str]) -> bool:
  """Whether JAX's own detection should find a multi-process cluster (see the module doc)."""
  for names, count in ((_SLURM, "SLURM_NTASKS"), (_OPEN_MPI, "OMPI_COMM_WORLD_SIZE")):
    if all(name in environ for name in names) and (_env_int(environ, count) or 1) > 1:
      return True
  return on_tpu_vm()


def on_tpu_vm() -> bool:
  """Whether this host is a TPU VM: libtpu is installed and TPU chips are attached (libtpu alone
  is not enough: CPU hosts install it to compile for TPU topologies, `birdie_jax.aot`)."""
  chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(chips) and importlib.util.find_spec("libtpu") is not None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None,
            environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
  """Keyword arguments for `jax.distributed.initialize`, or None for a single process.

  An empty dict means JAX detects the cluster itself. Raises ConfigError for incomplete or
  inconsistent explicit settings.
  """
  address = coordinator_address or environ.get(_ENV["coordinator_address"]) or None
  count = num_processes if num_processes is not None else _env_int(environ, _ENV["num_processes"])
  index = process_id if process_id is not None else _env_int(environ, _ENV["process_id"])
  if count is None:
    if address is not None or index is not None:
      raise ConfigError("--coordinator_address and --process_id need --num_processes "
                        f"(or {_ENV['num_processes']})")
    return {} if _cluster_detected(environ) else None
  if count < 1:
    raise ConfigError(f"--num_processes must be positive, got {count}")
  if count == 1:
    return None
  missing = [f"--{name}" for name, value in
             (("coordinator_address", address), ("process_id", index)) if value is None]
  if missing:
    raise ConfigError(f"--num_processes={count} also needs {' and '.join(missing)} "
                      f"(or {', '.join(_ENV[m[2:]] for m in missing)})")
  if not 0 <= index < count:
    raise ConfigError(f"--process_id must be in [0, {count}), got {index}")
  return {"coordinator_address": address, "num_processes": count, "process_id": index}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the run's other processes when there are any (see the module doc). Call it once,
  before anything creates a JAX array, lists devices or compiles."""
  settings = resolve(coordinator_address, num_processes, process_id)
  if settings is None:
    return
  jax.distributed.initialize(**settings)
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    jax.config.update("jax_enable_compilation_cache", False)
