"""Shared pieces of the device benchmarks: timing, the device's ceilings, tables and JSON lines."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import pathlib
import platform
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from birdie_jax.ops.timing import time_ms  # noqa: F401  (the benchmarks' timing, shared)

RESULTS = "experiments/benchmarks/results.jsonl"
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy")


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
  """Bytes per second of a device copy (`t + 1` on float32), counting bytes read and written."""
  t = jnp.ones((nbytes // 4,), jnp.float32)
  ms = time_ms(jax.jit(lambda t: t + 1), t, reps=9, inner=4)
  return 2 * nbytes / (ms * 1e-3)


def peak_memory_bytes() -> int | None:
  """The device allocator's peak bytes in use so far (None where the backend has no stats)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def device_info() -> dict[str, Any]:
  """What ran the benchmark: card name, platform, host and package versions."""
  device = jax.devices()[0]
  versions = {}
  for name in _VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"card": device.device_kind, "platform": device.platform,
          "device_count": jax.device_count(), "host": platform.node(),
          "python": platform.python_version(), "versions": versions}


def append_results(records: Sequence[dict[str, Any]], subcommand: str, argv: Sequence[str],
                   path: str = RESULTS) -> None:
  """Appends one JSON line per record, each with date, command and `device_info()`."""
  if not path:
    return
  common = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python -m birdie_jax.bench", subcommand, *argv]),
            "device": device_info()}
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("a", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps({**common, "benchmark": subcommand, **record}) + "\n")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
  """Prints `columns` of `rows` as an aligned text table (floats to 3 significant digits)."""

  def cell(value) -> str:
    if isinstance(value, float):
      return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return "-" if value is None else str(value)

  cells = [[cell(row.get(c)) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
  print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
  for r in cells:
    print("  ".join(v.rjust(w) for v, w in zip(r, widths)), flush=True)
