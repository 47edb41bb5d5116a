"""`python -m birdie_jax.bench tpu_aot`: compiles the Pallas scan for a TPU topology, from CPU.

Needs `jax[tpu]` (libtpu) at the pinned jax version; no TPU is used. For each direction, the
forward and forward+backward of `pallas_scan` at `--shape` (bf16) are lowered and compiled for
the first device of `--topology`; XLA's cost and memory analyses are printed and appended.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.experimental import topologies

from birdie_jax import cli
from birdie_jax.aot import require_libtpu
from birdie_jax.bench import harness
from birdie_jax.chips import parse_topology
from birdie_jax.errors import ConfigError
from birdie_jax.ops import scan_pallas


def compile_scan(device, shape: tuple[int, int, int], reverse: bool) -> list[dict]:
  """Compiles forward and forward+backward for `device`; one result row each."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  spec = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=sharding)

  def forward(a, x):
    return scan_pallas.pallas_scan(a, x, reverse=reverse, platform="tpu")

  def forward_backward(a, x, g):
    return jax.vjp(lambda a, x: forward(a, x)[0], a, x)[1](g)

  rows = []
  for name, fn, args in (("fwd", forward, (spec, spec)),
                         ("fwd_bwd", forward_backward, (spec, spec, spec))):
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    rows.append({"pass": name, "reverse": reverse, "shape": "x".join(map(str, shape)),
                 "target": device.device_kind, "bytes_accessed": cost.get("bytes accessed"),
                 "temp_bytes": memory.temp_size_in_bytes,
                 "argument_bytes": memory.argument_size_in_bytes,
                 "output_bytes": memory.output_size_in_bytes})
  return rows


def main(argv: list[str]) -> None:
  """Parses flags, compiles both directions, prints and appends the analyses."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench tpu_aot",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--topology", default="v5e:2x2", help="TPU topology name")
  parser.add_argument("--shape", type=cli.shapes, default="8x2048x2048", help="BxLxD")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  if len(args.shape) != 1:
    parser.error(f"argument --shape: one BxLxD shape, got {len(args.shape)}")
  try:
    parse_topology(args.topology)
    require_libtpu()
  except ConfigError as e:
    parser.error(str(e))
  device = topologies.get_topology_desc(platform="tpu", topology_name=args.topology).devices[0]
  shape = args.shape[0]
  rows = [row for reverse in (False, True) for row in compile_scan(device, shape, reverse)]
  harness.print_table(rows, ("pass", "reverse", "shape", "target", "bytes_accessed",
                             "temp_bytes", "argument_bytes", "output_bytes"))
  harness.append_results([{**row, "topology": args.topology} for row in rows], "tpu_aot", argv,
                         args.results)
