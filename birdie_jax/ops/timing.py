"""Device timing shared by the scan's autotune (ops/scan_autotune.py) and the benchmarks
(bench/harness.py re-exports it): warm-up calls first, back-to-back calls waited for once, medians.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def time_ms(fn: Callable, *args, warmup: int = 2, reps: int = 7, inner: int = 1) -> float:
  """Median milliseconds per call of `fn(*args)` over `reps` timings of `inner` calls each.

  The `inner` calls are dispatched back to back and waited for once, which hides dispatch
  latency for short kernels; `warmup` calls first keep compilation out of the numbers.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    for _ in range(inner):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) * 1e3 / inner)
  return statistics.median(times)
