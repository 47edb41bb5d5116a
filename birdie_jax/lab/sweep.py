"""A lab sweep in a workdir: every point trained once, in order, resumable at any moment.

`run_sweep` skips the points whose result is in `points/`, continues a point that has a saved
state in `partial/`, and stops (resumably) at `max_minutes`: it starts no point that the longest
point so far would carry past the deadline (a machine that keeps nothing between calls, as the
lent GPUs, then loses no half-trained point), and a point that the deadline still catches saves
its state and stops. The first start writes the settings
to `settings.json`; a later start with other settings that change what a point is (anything
but `settings.SELECTION_KEYS`, which only choose the points) stops with one line, so a workdir
never mixes points trained two ways.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections

from birdie_jax.errors import ConfigError
from birdie_jax.lab import settings as lab_settings
from birdie_jax.lab.point import OutOfTime, run_point
from birdie_jax.workdir import write_atomic


def _identity(settings: ml_collections.ConfigDict) -> dict:
  return {k: v for k, v in settings.to_dict().items() if k not in lab_settings.SELECTION_KEYS}


def check_identity(settings: ml_collections.ConfigDict, workdir: str) -> None:
  """Records the settings at the first start; ConfigError if a later start changes a point."""
  path = os.path.join(workdir, "settings.json")
  if not os.path.exists(path):
    write_atomic(path, json.dumps(settings.to_dict(), indent=1))
    return
  with open(path) as f:
    saved = json.load(f)
  current = _identity(settings)
  for key, value in current.items():
    if saved.get(key) != value:
      raise ConfigError(f"lab workdir {workdir} was swept with {key}={saved.get(key)!r}, not "
                        f"{value!r}: its points would mix two set-ups; use another workdir")


def done(workdir: str) -> set[str]:
  """Names of the finished points."""
  folder = os.path.join(workdir, "points")
  if not os.path.isdir(folder):
    return set()
  return {name[:-5] for name in os.listdir(folder) if name.endswith(".json")}


def run_sweep(settings: ml_collections.ConfigDict, workdir: str, *, log=print) -> bool:
  """Runs the unfinished points; True when every point of `settings` is done, False when
  `max_minutes` stopped it (run it again to continue)."""
  lab_settings.validate(settings)
  check_identity(settings, workdir)
  deadline = (time.monotonic() + 60 * settings.max_minutes) if settings.max_minutes else None
  todo = [p for p in lab_settings.points(settings) if p.name not in done(workdir)]
  log(f"lab: {len(todo)} of {len(lab_settings.points(settings))} points to run in {workdir}")
  longest = 0.0  # a point is not started when the longest so far would overrun the deadline
  for point in todo:
    if deadline is not None and time.monotonic() + longest > deadline:
      log(f"lab: stopped at max_minutes={settings.max_minutes}; run again to continue")
      return False
    start = time.perf_counter()
    try:
      result = run_point(settings, point, workdir, deadline=deadline, log=log)
    except OutOfTime:
      log(f"lab: stopped inside {point.name} (saved); run again to continue")
      return False
    longest = max(longest, time.perf_counter() - start)
    best = result["best"]
    log(f"lab: {point.name} done in {time.perf_counter() - start:.0f}s | best lr "
        f"{best['learning_rate']:g} | test accuracy "
        f"{' '.join(f'{a:.3f}' for a in best['test_accuracy'])}")
  return True
