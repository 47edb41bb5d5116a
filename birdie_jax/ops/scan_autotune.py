"""Which Pallas tiling the scan uses on a GPU: per card, chosen once by a small autotune, cached.

A tiling tuned on one card is not the best on another (the H100's tiling ran the (8, 2048, 2048)
forward at 1.25x the copy floor there and 1.43x on an H200; issue "Speed II"), so the GPU
tiling is looked up per card (`jax.Device.device_kind`), in this order:

  1. `$BIRDIE_JAX_SCAN_TILING`: a `Tiling` spec (`scan_pallas.Tiling.parse`) for every card, for
     experiments (`python -m birdie_jax.bench scan --tilings=...` sweeps them side by side);
  2. the cache file `$BIRDIE_JAX_CACHE_DIR/scan_tilings.json` (default `~/.cache/birdie_jax`):
     `{device_kind: {"tiling": spec, "ms": {"forward"|"backward": {spec: milliseconds}},
     "shape": ..., "date": ...}}`,
     what an earlier autotune on this machine chose;
  3. `KNOWN`: what the autotune chose on the cards we measured (the default table; each entry says
     where its measurement is recorded);
  4. otherwise the autotune, once per card, at the first scan traced on it (set
     `BIRDIE_JAX_SCAN_AUTOTUNE=0` to skip it and use `scan_pallas.GPU_TILING`, as multi-process
     jobs always do: their hosts must compile one program; tune the card in a single process
     first, or ship the cache file).

The autotune times `FORWARDS` and `BACKWARDS` on a (8, 2048, 2048) bfloat16 scan (the Hawk-1.4B
layer's shape per device at batch 8): forwards by the forward's median time, then backwards by
forward+backward time with the chosen forward. Each candidate's outputs are checked against the
associative scan first; a tiling that compiles wrongly or fails to compile is skipped, not
chosen. Compiling the candidates takes most of its time (Triton unrolls `unroll` rows per loop
iteration); the result is written atomically, so later runs on the card pay nothing.

Rerun it and print the choice with `python -m birdie_jax.bench scan --autotune` (it ignores the
cache and rewrites it); record the card's choice in `KNOWN` with the benchmark's date.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from birdie_jax.errors import ConfigError
from birdie_jax.ops import scan_pallas
from birdie_jax.ops.scan_pallas import Tiling
from birdie_jax.ops.timing import time_ms
from birdie_jax.workdir import cache_dir, write_atomic

TILING_ENV = "BIRDIE_JAX_SCAN_TILING"
AUTOTUNE_ENV = "BIRDIE_JAX_SCAN_AUTOTUNE"
CACHE_FILE = "scan_tilings.json"
SHAPE = (8, 2048, 2048)  # what the autotune times (module-level: tests shrink it)
DTYPE = jnp.bfloat16

# device_kind -> the tiling the autotune chose there (source of each measurement beside it).
KNOWN: dict[str, str] = {
    # experiments/benchmarks/README.md, eighth session (2026-12-06): fastest of the sweep.
    "NVIDIA H100 80GB HBM3": scan_pallas.GPU_TILING.spec(),
}

# Forward candidates (the H100's best and its neighbours in warps, unroll and pipelining), then
# backward candidates (the backward moves 5 tensors to the forward's 3 and liked wider groups).
FORWARDS = ("64x32x4bps2", "64x16x4bps2", "64x32x8bps2", "128x32x4bps2", "64x32x4bp")
BACKWARDS = ("64x64x4b", "64x32x4b", "64x64x8b", "128x64x4b")

Timer = Callable[[Tiling, Callable, tuple], float]  # (tiling, jitted fn, args) -> milliseconds
_LOCK = threading.Lock()
_CHOSEN: dict[str, Tiling] = {}  # this process's answers per device kind


def cache_path() -> str:
  """`$BIRDIE_JAX_CACHE_DIR/scan_tilings.json` (default folder `~/.cache/birdie_jax`)."""
  return cache_dir(CACHE_FILE)


def _parse(spec: str, where: str) -> Tiling:
  try:
    tiling = Tiling.parse(spec)
  except ValueError as e:
    raise ConfigError(f"{where}: {e}") from None
  if any(t.block_len is not None for t in (tiling, tiling.for_backward())):
    raise ConfigError(f"{where}: GPU tilings take no xLEN (Triton runs grid steps in parallel), "
                      f"got {spec!r}")
  return tiling


def read_cache(path: str | None = None) -> dict:
  """The cache file's entries ({} when there is none); a corrupt file is one clear error."""
  path = path or cache_path()
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      entries = json.load(f)
    if not isinstance(entries, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:
    raise ConfigError(f"scan tiling cache {path} is unreadable ({e}): delete it to autotune "
                      "again") from None
  return entries


def _write_cache(device_kind: str, entry: dict, path: str | None = None) -> None:
  """Adds `entry` for `device_kind` to the cache, atomically (a temporary file, then rename)."""
  path = path or cache_path()
  write_atomic(path, json.dumps({**read_cache(path), device_kind: entry}, indent=1,
                                sort_keys=True))


def _median_ms(tiling: Tiling, fn: Callable, args: tuple, reps: int = 7, inner: int = 20) -> float:
  """Median milliseconds per call of `fn(*args)` over `reps` timings of `inner` calls dispatched
  back to back (a (8, 2048, 2048) forward takes about 0.1 ms on an H100, near one call's dispatch
  latency), after a warm call (`tiling` only names it)."""
  del tiling
  return time_ms(fn, *args, warmup=1, reps=reps, inner=inner)


def _inputs(shape: Sequence[int], dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  ka, kx, kg = jax.random.split(jax.random.key(0), 3)
  a = jax.random.uniform(ka, shape, jnp.float32, 0.9, 1.0).astype(dtype)
  return a, jax.random.normal(kx, shape, dtype), jax.random.normal(kg, shape, dtype)


def _reference(a, x, g):
  """y and the (a, x) gradients of the associative scan in float32: what every candidate must
  reproduce."""
  def scan(a, x):
    def combine(left, right):
      return left[0] * right[0], right[0] * left[1] + right[1]
    return jax.lax.associative_scan(combine, (a, x), axis=1)[1]
  a32, x32 = a.astype(jnp.float32), x.astype(jnp.float32)
  y, vjp = jax.vjp(scan, a32, x32)
  return y, vjp(g.astype(jnp.float32))


def _close(got, want) -> bool:
  """Within bfloat16's rounding of the float32 reference (relative, over the whole tensor)."""
  tolerance = 2e-2 if jnp.dtype(got.dtype).itemsize < 4 else 1e-4
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return bool(np.linalg.norm(got - want) <= tolerance * np.linalg.norm(want))


def _fastest(tilings: Sequence[Tiling], run: Callable, check: Callable, args: tuple,
             timer: Timer, ms: dict[str, float | None]) -> Tiling:
  """The fastest of `tilings` whose `run(tiling, *args)` passes `check`; records each one's
  milliseconds (None: rejected by the compiler or wrong) in `ms`."""
  timed = {}
  for tiling in tilings:
    fn = jax.jit(functools.partial(run, tiling))
    try:
      ok = check(fn(*args))
      ms[tiling.spec()] = timed[tiling] = timer(tiling, fn, args) if ok else None
    except Exception:  # pylint: disable=broad-except  (a candidate the compiler rejects)
      ms[tiling.spec()] = None
  timed = {t: v for t, v in timed.items() if v is not None}
  if not timed:
    raise RuntimeError(f"no scan tiling of {[t.spec() for t in tilings]} compiled and matched "
                       "the reference")
  return min(timed, key=timed.get)


def autotune(*, platform: str | None = None,
             timer: Timer = _median_ms) -> tuple[Tiling, dict[str, dict[str, float | None]]]:
  """Times `FORWARDS` then `BACKWARDS` at `SHAPE` (bfloat16); returns the fastest correct
  tiling and each candidate's milliseconds per stage (None: failed to compile or wrong):
  `{"forward": {spec: ms}, "backward": {spec: ms}}`, forwards timed alone, backwards as
  forward+backward behind the chosen forward."""
  args = _inputs(SHAPE, DTYPE)
  want_y, want_grads = _reference(*args)

  def forward(tiling, a, x, g):
    del g
    return scan_pallas.pallas_scan(a, x, tiling=tiling, platform=platform)[0]

  def forward_backward(tiling, a, x, g):
    y, vjp = jax.vjp(lambda a, x: forward(tiling, a, x, None), a, x)
    return y, vjp(g)

  def grads_match(out):
    return _close(out[0], want_y) and all(_close(p, q) for p, q in zip(out[1], want_grads))

  ms: dict[str, dict[str, float | None]] = {"forward": {}, "backward": {}}
  chosen = _fastest([_parse(s, "autotune candidate") for s in FORWARDS], forward,
                    lambda y: _close(y, want_y), args, timer, ms["forward"])
  behind = [_parse(s, "autotune candidate") for s in BACKWARDS]
  best = _fastest([dataclasses.replace(chosen, backward=None if b == chosen else b)
                   for b in behind], forward_backward, grads_match, args, timer, ms["backward"])
  return best, ms


def _outside_traces(fn: Callable):
  """`fn()` in a new thread: JAX's tracing state is per thread, so the candidates compile and run
  there even when the first scan on a card is being traced under `jit` (where every operation,
  even on constants, would be staged into the traced program instead of run)."""
  result = {}

  def target():
    try:
      result["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the caller)
      result["error"] = e
  thread = threading.Thread(target=target, name="scan-autotune")
  thread.start()
  thread.join()
  if "error" in result:
    raise result["error"]
  return result["value"]


def gpu_tiling(device_kind: str, *, timer: Timer = _median_ms,
               platform: str | None = None) -> Tiling:
  """The tiling for the card `device_kind` (the module docstring's lookup order)."""
  spec = os.environ.get(TILING_ENV)
  if spec:
    return _parse(spec, f"${TILING_ENV}")
  with _LOCK:
    if device_kind in _CHOSEN:
      return _CHOSEN[device_kind]
    entry = read_cache().get(device_kind)
    if entry is not None:
      tiling = _parse(entry.get("tiling", ""), f"{cache_path()} [{device_kind!r}]")
    elif device_kind in KNOWN:
      tiling = Tiling.parse(KNOWN[device_kind])
    elif os.environ.get(AUTOTUNE_ENV, "1") == "0" or jax.process_count() > 1:
      tiling = scan_pallas.GPU_TILING  # hosts of one job must compile the same program
    else:
      tiling = retune(device_kind, timer=timer, platform=platform)
    _CHOSEN[device_kind] = tiling
    return tiling


def retune(device_kind: str, *, timer: Timer = _median_ms,
           platform: str | None = None) -> Tiling:
  """Runs the autotune now and writes its choice into the cache (whatever was there)."""
  print(f"scan: autotuning the Pallas tiling for {device_kind} (once per card; cached in "
        f"{cache_path()})", flush=True)
  start = time.perf_counter()
  tiling, ms = _outside_traces(lambda: autotune(timer=timer, platform=platform))
  try:
    _write_cache(device_kind, {
        "tiling": tiling.spec(), "ms": ms, "shape": list(SHAPE),
        "date": datetime.date.today().isoformat(), "jax": jax.__version__,
        "seconds": round(time.perf_counter() - start, 1)})
  except OSError as e:  # a read-only home: this run still uses the choice, the next tunes again
    print(f"scan: could not cache the tiling in {cache_path()} ({e}); set "
          "$BIRDIE_JAX_CACHE_DIR to a writable folder to keep it", flush=True)
  print(f"scan: {device_kind} uses tiling {tiling.spec()} ({time.perf_counter() - start:.0f} s)",
        flush=True)
  _CHOSEN[device_kind] = tiling
  return tiling


def forget() -> None:
  """Drops this process's answers (tests; after editing the cache file)."""
  with _LOCK:
    _CHOSEN.clear()


def table() -> Mapping[str, str]:
  """KNOWN with this machine's cached choices over it: what each card uses here."""
  return {**KNOWN, **{k: v.get("tiling", "?") for k, v in read_cache().items()}}


def tiling_for_backend() -> Tiling | None:
  """The current backend's tiling for `linear_scan`: per card on GPUs, None (the platform's
  default) elsewhere."""
  if jax.default_backend() not in scan_pallas.GPU_PLATFORMS:
    return None
  return gpu_tiling(jax.devices()[0].device_kind)
