"""Ahead-of-time compile of a config's train step for a TPU topology, on a CPU host.

    python -m birdie_jax.aot --config=configs/sweep.py:hawk-1.4b-birdie --topology=v5e:16x16

Needs libtpu (pinned in requirements-aot.txt); no TPU is used. The real train step
(`make_train_setup` and `make_train_step`, the config's mesh over the topology's devices) is
lowered and compiled for the topology, then printed: per-device HBM from XLA's memory analysis
against the chip's HBM, FLOPs per step from XLA's cost analysis, and the step time and MFU these
predict, two ways:
  * at an assumed MFU (`--assumed_mfu`, 0.4): 6·N·tokens / (chips x peak bf16 FLOP/s x MFU);
  * roofline: per device max(XLA FLOPs / peak, XLA bytes accessed / HBM bandwidth), which ignores
    communication and imperfect overlap, so it bounds the step time from below and MFU from above.
Topology names: `v4:4x4x4` (64 chips, v4-128 in TensorCore naming), `v5e:16x16` (256 chips),
`v5p:4x4x4`, `v6e:8x8`: the generation, then the chip grid. v4 and v5p compile in megacore mode
(one device per chip) as they run. `--json=FILE` appends the numbers as one JSON line.

The flags, the config and libtpu's presence are checked before anything is lowered, each
problem in one line (without libtpu: what is missing and the pip command that adds it).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from jax.experimental import topologies
from ml_collections import config_flags

from birdie_jax import cli
from birdie_jax.chips import Chip, parse_topology, topology_chip, topology_chips
from birdie_jax.config import validate_config
from birdie_jax.data.packing import FEATURES
from birdie_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models.layer_stack import STACKED
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding, check_batch_layout, validate_rules
from birdie_jax.train.checkpointing import restore_targets
from birdie_jax.train.state import make_train_setup
from birdie_jax.train.step import make_train_step
from birdie_jax.workdir import check_writable

GIB = 2**30
_GET_LIBTPU = "pip install -r requirements-aot.txt (the libtpu of the pinned jax; Linux x86-64)"


def require_libtpu() -> None:
  """ConfigError in one line unless a TPU compiler can be loaded: libtpu installed as a package,
  or a library at $TPU_LIBRARY_PATH (what JAX itself looks for)."""
  path = os.environ.get("TPU_LIBRARY_PATH", "")
  if (path and os.path.exists(path)) or importlib.util.find_spec("libtpu") is not None:
    return
  raise ConfigError(f"compiling for a TPU topology needs libtpu, which is not installed: "
                    f"{_GET_LIBTPU}")


def topology_devices(name: str) -> list:
  """Compile-only devices of a TPU topology (one per chip, as JAX runs on it)."""
  require_libtpu()
  # No TPU is opened, so libtpu's one-process-per-host lock need not keep other compiles out.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  mode = "megacore" if topology_chip(name).megacore else "default"
  return list(topologies.get_topology_desc(platform="tpu", topology_name=name,
                                           chip_config_name=mode).devices)


def planned_vocab_size(data: ml_collections.ConfigDict) -> int:
  """The vocabulary the run will have, without training its tokenizer."""
  tokenizer = data.tokenizer
  if tokenizer.kind == "bytes":
    return ByteTokenizer().vocab_size
  if tokenizer.model_path:
    return SentencePieceTokenizer.load(tokenizer.model_path).vocab_size
  return tokenizer.vocab_size


@dataclasses.dataclass(frozen=True)
class AotReport:
  """What compiling one config's train step for one topology tells."""
  topology: str
  device_kind: str
  mesh: dict[str, int]
  num_params: int
  tokens_per_step: int
  lower_s: float
  compile_s: float
  out_of_memory: str = ""  # XLA's message when the step does not fit the chip's HBM
  hbm_bytes: int = 0  # per device: arguments + outputs - aliased + temporaries + code
  temp_bytes: int = 0
  argument_bytes: int = 0
  xla_flops: float = 0.0  # per device and step (remat recomputation included)
  xla_bytes_accessed: float = 0.0  # per device and step
  scanned_layers: bool = False  # XLA's cost analysis counts a scanned loop's body once

  @property
  def chip(self) -> Chip:
    """The topology's chip."""
    return topology_chip(self.topology)

  @property
  def chips(self) -> int:
    """Chips in the topology."""
    return topology_chips(self.topology)

  @property
  def model_flops(self) -> float:
    """6·N·tokens for one step (the MFU numerator; attention FLOPs not counted)."""
    return 6.0 * self.num_params * self.tokens_per_step

  def step_s_at(self, mfu: float) -> float:
    """Step time if the model FLOPs ran at `mfu` of the slice's peak."""
    return self.model_flops / (self.chips * self.chip.peak_bf16_tflops * 1e12 * mfu)

  @property
  def roofline_step_s(self) -> float:
    """max(compute, HBM traffic) time per device from XLA's counts (no communication)."""
    return max(self.xla_flops / (self.chip.peak_bf16_tflops * 1e12),
               self.xla_bytes_accessed / (self.chip.hbm_gb_per_s * 1e9))

  @property
  def roofline_mfu(self) -> float:
    """The MFU at the roofline step time (an upper bound)."""
    return self.model_flops / (self.chips * self.chip.peak_bf16_tflops * 1e12
                               * self.roofline_step_s)


def abstract_batch(config: ml_collections.ConfigDict, mesh, rules) -> dict:
  """ShapeDtypeStructs of one global training batch, sharded as the loop places it."""
  shape = (config.train.batch_size, config.train.seq_len)
  sharding = batch_sharding(mesh, rules, 2)
  return {name: jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sharding)
          for name, dtype in FEATURES.items()}


def compile_train_step(config: ml_collections.ConfigDict, topology: str) -> AotReport:
  """Lowers and compiles `config`'s train step on its mesh over `topology`'s devices."""
  validate_config(config)
  devices = topology_devices(topology)
  mesh = make_mesh(config.mesh.shape, devices=devices)
  rules = tuple(tuple(r) for r in config.mesh.axis_rules)
  validate_rules(rules, mesh.axis_names)
  if config.train.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
    raise ConfigError(f"train.batch_size ({config.train.batch_size}) must be divisible by the "
                      f"mesh's data x fsdp size ({mesh.shape['data'] * mesh.shape['fsdp']})")
  check_batch_layout(mesh, rules, config.train.batch_size, config.train.seq_len)
  setup = make_train_setup(config, planned_vocab_size(config.data), mesh)
  state = restore_targets(setup.abstract_state, setup.state_shardings)  # sharded abstract state
  step = make_train_step(setup, config.train)
  report = functools.partial(
      AotReport, topology=topology, device_kind=devices[0].device_kind, mesh=dict(mesh.shape),
      num_params=setup.num_params,
      tokens_per_step=config.train.batch_size * config.train.seq_len,
      scanned_layers=STACKED in setup.abstract_params.get("blocks", {}))
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    lowered = step.lower(state, abstract_batch(config, mesh, rules))
    lowered_at = time.perf_counter()
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      return report(out_of_memory=str(e).rpartition("RESOURCE_EXHAUSTED: ")[2].strip(),
                    lower_s=lowered_at - start, compile_s=time.perf_counter() - lowered_at)
    compiled_at = time.perf_counter()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return report(
      hbm_bytes=(memory.argument_size_in_bytes + memory.output_size_in_bytes
                 - memory.alias_size_in_bytes + memory.temp_size_in_bytes
                 + memory.generated_code_size_in_bytes),
      temp_bytes=memory.temp_size_in_bytes, argument_bytes=memory.argument_size_in_bytes,
      xla_flops=float(cost.get("flops", 0.0)),
      xla_bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      lower_s=lowered_at - start, compile_s=compiled_at - lowered_at)


def format_report(report: AotReport, assumed_mfu: float) -> str:
  """The printed table."""
  chip = report.chip
  mesh = " x ".join(f"{name} {size}" for name, size in report.mesh.items())
  rows = [
      ("topology", f"{report.topology}: {report.chips} chips of {report.device_kind} "
                   f"({chip.hbm_gib:g} GiB HBM, {chip.peak_bf16_tflops:g} TFLOP/s bf16, "
                   f"{chip.hbm_gb_per_s:g} GB/s)"),
      ("mesh", mesh),
      ("parameters", f"{report.num_params:,}"),
  ]
  if report.out_of_memory:
    rows.append(("HBM per device", f"DOES NOT FIT: {report.out_of_memory}"))
  else:
    step = f"{report.step_s_at(assumed_mfu):.3g} s at an assumed {assumed_mfu:.0%} MFU"
    if report.scanned_layers:
      flops = (f"6·N·tokens {report.model_flops:.3g}; XLA's own count and the roofline are left "
               f"out: XLA counts a scanned loop's body once (--config.model.scan_layers=false "
               f"compiles every block and gives them)")
    else:
      flops = (f"XLA {report.xla_flops * report.chips:.3g} ({report.xla_flops:.3g} per device); "
               f"6·N·tokens {report.model_flops:.3g}")
      step += (f"; roofline {report.roofline_step_s:.3g} s (MFU <= {report.roofline_mfu:.0%}; "
               f"XLA FLOPs and bytes, no communication)")
    rows += [
        ("HBM per device", f"{report.hbm_bytes / GIB:.2f} GiB of {chip.hbm_gib:g} GiB "
                           f"({report.hbm_bytes / GIB / chip.hbm_gib:.0%}); arguments "
                           f"{report.argument_bytes / GIB:.2f}, temporaries "
                           f"{report.temp_bytes / GIB:.2f}"),
        ("FLOPs per step", flops),
        ("step time", step),
        ("tokens/s", f"{report.tokens_per_step / report.step_s_at(assumed_mfu):,.0f} at "
                     f"{assumed_mfu:.0%} MFU"),
    ]
  rows.append(("compile", f"lower {report.lower_s:.1f} s, compile {report.compile_s:.1f} s"))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                  lock_config=True)
  flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:16x16 or v4:4x4x4")
  flags.DEFINE_float("assumed_mfu", 0.4, "MFU for the predicted step time")
  flags.DEFINE_string("json", "", "append the numbers as a JSON line to this file")


def check_flags(topology: str, assumed_mfu: float, json_path: str) -> None:
  """ConfigError (one line) for a bad topology name, MFU or `--json` destination, before the
  compile that would otherwise end in it."""
  parse_topology(topology)
  cli.require(0.0 < assumed_mfu <= 1.0, f"--assumed_mfu must be in (0, 1], got {assumed_mfu:g}")
  if json_path:
    cli.require(not os.path.isdir(json_path), f"--json={json_path} is a folder, not a file")
    check_writable(os.path.dirname(os.path.abspath(json_path)), hint="--json appends there")


_PROGRAM = "birdie_jax.aot"


def main(argv: list[str]) -> None:
  """Compiles, prints the table, optionally appends JSON; user errors end in one line, a step
  that does not fit in exit status 1."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  config = cli.required_config(_PROGRAM, "--config=configs/sweep.py:hawk-1.4b-birdie")
  with cli.user_errors(_PROGRAM):
    check_flags(f.topology, f.assumed_mfu, f.json)
    report = compile_train_step(config, f.topology)
  print(format_report(report, f.assumed_mfu), flush=True)
  if f.json:
    row = {"config": config_flags.get_config_filename(f["config"]),
           **dataclasses.asdict(report), "chips": report.chips,
           "model_flops": report.model_flops, "assumed_mfu": f.assumed_mfu,
           "step_s_at_assumed_mfu": report.step_s_at(f.assumed_mfu)}
    if not report.out_of_memory and not report.scanned_layers:
      row.update(roofline_step_s=report.roofline_step_s, roofline_mfu=report.roofline_mfu)
    with open(f.json, "a", encoding="utf-8") as out:
      out.write(json.dumps(row) + "\n")
  if report.out_of_memory:
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
