"""`python -m birdie_jax.bench scan`: `linear_scan` implementations against the memory floor.

For each shape and implementation: forward and forward+backward milliseconds (median), the HBM
floor (bytes that must move over the device-copy bandwidth measured in the same run: 3 tensor
passes forward, 8 forward+backward) and their ratio, plus the relative error of y and of the
gradients against the associative scan, and the seconds the first forward and backward calls
took (`compile_s`: mostly compiling; unrolled Triton kernels can take minutes). Pallas tilings
(`--tilings`) are swept beside the card's own (`--autotune` first reruns the per-card autotune
of ops/scan_autotune.py and prints what each candidate took). One JSON line per measurement is
appended to `--results` as soon as it is taken.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from birdie_jax import cli
from birdie_jax.bench import harness
from birdie_jax.ops.scan import linear_scan
from birdie_jax.ops import scan_autotune
from birdie_jax.ops.scan_pallas import GPU_PLATFORMS, Tiling, default_tiling, pallas_scan

_COLUMNS = ("impl", "shape", "fwd_ms", "fwd_floor_ms", "fwd_ratio", "fwd_bwd_ms",
            "fwd_bwd_floor_ms", "fwd_bwd_ratio", "y_rel_err", "grad_rel_err", "compile_s")


def _scan_fns(impls: list[str], tilings: list[Tiling]):
  """Label -> `(a, x) -> y` for each implementation and each Pallas tiling."""
  fns = {impl: (lambda a, x, impl=impl: linear_scan(a, x, impl=impl)[0]) for impl in impls}
  for tiling in tilings:
    fns[f"pallas[{tiling.spec()}]"] = lambda a, x, tiling=tiling: pallas_scan(
        a, x, tiling=tiling)[0]
  return fns


def _rel_err(got: jax.Array, want: jax.Array) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def measure(shape: tuple[int, int, int], dtype: jnp.dtype, fns: dict, bandwidth: float,
            reps: int, report: Callable[[dict], None]) -> list[dict]:
  """Times every function at `shape`, passing each row to `report`; errors are relative to the
  first function."""
  ka, kx, kg = jax.random.split(jax.random.key(sum(shape)), 3)
  a = jax.random.uniform(ka, shape, jnp.float32, 0.9, 1.0).astype(dtype)
  x = jax.random.normal(kx, shape, dtype)
  g = jax.random.normal(kg, shape, dtype)
  tensor_bytes = a.size * a.dtype.itemsize
  floors = {"fwd": 3 * tensor_bytes / bandwidth * 1e3,
            "fwd_bwd": 8 * tensor_bytes / bandwidth * 1e3}
  inner = min(50, max(1, int(20 / floors["fwd_bwd"])))  # about 20 ms per timing
  rows, reference = [], None
  for label, fn in fns.items():
    forward = jax.jit(fn)
    backward = jax.jit(lambda a, x, g, fn=fn: jax.vjp(fn, a, x)[1](g))
    start = time.perf_counter()
    y, grads = jax.block_until_ready((forward(a, x), backward(a, x, g)))
    first_call_s = time.perf_counter() - start  # mostly compiling both
    reference = reference or (y, grads)
    row = {"impl": label, "shape": "x".join(map(str, shape)), "dtype": jnp.dtype(dtype).name,
           "fwd_ms": harness.time_ms(forward, a, x, reps=reps, inner=inner),
           "fwd_bwd_ms": harness.time_ms(backward, a, x, g, reps=reps, inner=inner),
           "y_rel_err": _rel_err(y, reference[0]),
           "grad_rel_err": max(_rel_err(p, q) for p, q in zip(grads, reference[1])),
           "compile_s": first_call_s,
           "copy_gb_per_s": bandwidth / 1e9, "pallas_default": (
               scan_autotune.tiling_for_backend() or default_tiling(jax.default_backend())).spec()}
    for kind, floor in floors.items():
      row[f"{kind}_floor_ms"] = floor
      row[f"{kind}_ratio"] = row[f"{kind}_ms"] / floor
    rows.append(row)
    report(row)
    print(f"{label} {row['shape']}: fwd {row['fwd_ms']:.3g} ms ({row['fwd_ratio']:.2f}x floor), "
          f"fwd+bwd {row['fwd_bwd_ms']:.3g} ms ({row['fwd_bwd_ratio']:.2f}x), compiled in "
          f"{first_call_s:.0f} s", flush=True)
  return rows


def main(argv: list[str]) -> None:
  """Parses flags, measures, prints the table and appends the JSON lines."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench scan",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", type=cli.shapes, default="8x8192x2048,8x2048x2048",
                      help="BxLxD, comma-separated")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                      help="dtype of a, x and y")
  parser.add_argument("--impls", type=cli.choices_list(*cli.SCAN_IMPLS),
                      default="associative,chunked,pallas",
                      help="linear_scan impls; the first is the error reference")
  parser.add_argument("--tilings", default="",
                      help="extra Pallas tilings WIDTHxUNROLLxWARPS[xLEN][b][p][sSTAGES], "
                      "comma-separated (b: block loads, p: prefetch, sN: Triton num_stages)")
  parser.add_argument("--autotune", action="store_true",
                      help="first rerun the per-card tiling autotune (ops/scan_autotune.py), "
                      "print each candidate's time and cache the choice that `pallas` then uses")
  parser.add_argument("--copy_mib", type=cli.positive_int, default=1024,
                      help="size of the bandwidth probe")
  parser.add_argument("--reps", type=cli.positive_int, default=7, help="timed repetitions (median)")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  try:
    tilings = [Tiling.parse(spec) for spec in args.tilings.split(",") if spec]
  except ValueError as e:
    parser.error(str(e))
  if args.autotune:
    if jax.default_backend() not in GPU_PLATFORMS:
      parser.error("--autotune tunes GPU tilings: run it on a GPU")
    kind = jax.devices()[0].device_kind
    scan_autotune.retune(kind)
    print(json.dumps(scan_autotune.read_cache()[kind], indent=1))
  bandwidth = harness.copy_bandwidth(args.copy_mib << 20)
  print(f"{harness.device_info()['card']}: device copy {bandwidth / 1e9:,.0f} GB/s")
  fns = _scan_fns(args.impls, tilings)
  rows = []
  for shape in args.shapes:
    rows += measure(shape, jnp.dtype(args.dtype), fns, bandwidth, args.reps,
                    lambda row: harness.append_results([row], "scan", argv, args.results))
  print()
  harness.print_table(rows, _COLUMNS)
