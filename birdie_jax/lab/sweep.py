"""A lab sweep in a workdir: every point trained once, in order (`workers` at a time), resumable
at any moment.

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

import concurrent.futures
import json
import os
import threading
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


class _Queue:
  """The sweep's unfinished points, taken one at a time by its workers: none is handed out once
  the longest point so far would carry past the deadline, or after `stop`."""

  def __init__(self, todo: list[lab_settings.Point], deadline: float | None):
    self._todo = list(todo)
    self._deadline = deadline
    self._longest = 0.0
    self._lock = threading.Lock()
    self.stop = threading.Event()
    self.deadline_reached = False  # a point was left unstarted for the deadline

  def take(self) -> lab_settings.Point | None:
    with self._lock:
      if self.stop.is_set() or not self._todo:
        return None
      if self._deadline is not None and time.monotonic() + self._longest > self._deadline:
        self.deadline_reached = True
        self.stop.set()
        return None
      return self._todo.pop(0)

  def took(self, seconds: float) -> None:
    with self._lock:
      self._longest = max(self._longest, seconds)


def _work(settings: ml_collections.ConfigDict, workdir: str, queue: _Queue, deadline, log) -> None:
  """Trains points from `queue` until it is empty or stopped; a point cut by the deadline or the
  stop is saved (`OutOfTime`) and ends this worker."""
  while (point := queue.take()) is not None:
    start = time.perf_counter()
    try:
      result = run_point(settings, point, workdir, deadline=deadline, stop=queue.stop, log=log)
    except OutOfTime:
      log(f"lab: stopped inside {point.name} (saved); run again to continue")
      queue.stop.set()
      return
    seconds = time.perf_counter() - start
    queue.took(seconds)
    best = result["best"]
    log(f"lab: {point.name} done in {seconds:.0f}s | best lr "
        f"{best['learning_rate']:g} | test accuracy "
        f"{' '.join(f'{a:.3f}' for a in best['test_accuracy'])}")


def run_sweep(settings: ml_collections.ConfigDict, workdir: str, *, log=print) -> bool:
  """Runs the unfinished points, `settings.workers` at a time; True when every point of
  `settings` is done, False when `max_minutes` stopped it (run it again to continue).

  Workers are threads of this process sharing its devices: a small lab point leaves a GPU mostly
  idle between its kernels (the width-64 gate point trained 24,000 steps of 18 replicas in 68 s,
  H100: about 1% of the card's bf16 peak), and another point's kernels fill those gaps. On a CPU
  one point already uses every core: keep 1 there. An error in one worker stops the others
  (each saves its point) and is raised here; so is Ctrl-C."""
  lab_settings.validate(settings)
  check_identity(settings, workdir)
  deadline = (time.monotonic() + 60 * settings.max_minutes) if settings.max_minutes else None
  todo = [p for p in lab_settings.points(settings) if p.name not in done(workdir)]
  log(f"lab: {len(todo)} of {len(lab_settings.points(settings))} points to run in {workdir}")
  queue = _Queue(todo, deadline)
  if settings.workers == 1:
    _work(settings, workdir, queue, deadline, log)
  else:
    with concurrent.futures.ThreadPoolExecutor(settings.workers,
                                               thread_name_prefix="lab-worker") as pool:
      futures = [pool.submit(_work, settings, workdir, queue, deadline, log)
                 for _ in range(settings.workers)]
      try:
        for future in concurrent.futures.as_completed(futures):
          if future.exception() is not None:
            queue.stop.set()
        for future in futures:
          future.result()  # the first error, after every worker has saved and stopped
      except BaseException:
        queue.stop.set()
        raise
  if queue.deadline_reached:
    log(f"lab: stopped at max_minutes={settings.max_minutes}; run again to continue")
  return not any(p.name not in done(workdir) for p in todo)
