"""Training one lab point to its result, in pieces: `run_point` resumes from the point's saved
state, trains in compiled chunks, records validation curves, saves every `checkpoint_seconds`
and at the deadline or when `stop` is set (then raises `OutOfTime`), and at the end scores every
replica and picks the learning rate.

Files under the sweep's workdir (each written atomically):
  partial/<point>.npz    replica params and optimizer states, flattened, with the step
  partial/<point>.json   the step, curves and timings so far
  points/<point>.json    the finished result (the partial files are then removed)
Learning rate choice: the one whose mean validation accuracy over seeds is highest (validation
examples are a stream of their own); the test examples then report every replica, and the
result's `best` holds the chosen learning rate's per-seed test numbers.
"""
from __future__ import annotations

import functools
import io
import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from birdie_jax.config import default_config
from birdie_jax.lab import tasks
from birdie_jax.lab.replicas import Replicas, TrainSpec, batch_indices, decode_state_size
from birdie_jax.lab.settings import Point, learning_rates
from birdie_jax.workdir import write_atomic


class OutOfTime(Exception):
  """The deadline (or a stop) came while a point was training; its state is saved."""


def model_config(settings: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """The package's model config for a point: `depth` blocks of `width`, recurrence as wide."""
  cfg = default_config().model
  heads = max(1, point.width // settings.head_width)
  cfg.update(family=point.family, width=point.width, depth=settings.depth,
             lru_width=point.width, num_heads=heads, num_kv_heads=heads,
             head_dim=point.width // heads, mlp_expansion=settings.mlp_expansion,
             bidirectional=point.layout == "bidirectional",
             bidirectional_every=settings.bidirectional_every,
             attention_window=settings.attention_window, attention_every=2,
             dtype=settings.dtype, scan_impl=settings.scan_impl)
  return cfg


def train_spec(settings: ml_collections.ConfigDict) -> TrainSpec:
  """The optimizer keys of the settings."""
  return TrainSpec(steps=settings.steps, batch_size=settings.batch_size,
                   warmup_fraction=settings.warmup_fraction, end_lr_ratio=settings.end_lr_ratio,
                   weight_decay=settings.weight_decay, b1=settings.b1, b2=settings.b2,
                   grad_clip=settings.grad_clip)


def replica_grid(settings: ml_collections.ConfigDict) -> tuple[list[float], list[int]]:
  """Replica r's learning rate and seed: learning rates outer, seeds inner."""
  lrs = learning_rates(settings)
  return ([lr for lr in lrs for _ in range(settings.seeds)],
          [s for _ in lrs for s in range(settings.seeds)])


_ROWS_LOCK = threading.Lock()
_ROWS_LOCKS: dict[tuple, threading.Lock] = {}


def _host_rows(task: str, difficulties: tuple[int, ...], split: str, count: int,
               data_ids: int) -> dict[str, np.ndarray]:
  """`tasks.rows`, kept for the next points of the same task (read-only). Drawing the 100k-example
  training pool in Python took most of a GPU point's time (H100, 2026-12-07, gpu256: MQAR 16
  pairs, 56 s a point of which 15 s compiling and training; 47 s per 100k MQAR rows on a loaded
  2-core CPU); a sweep runs every point of a task in turn, so it is drawn once per task. Workers
  (threads) asking for the same rows at once wait for one drawing rather than each drawing them
  under the GIL."""
  key = (task, difficulties, split, count, data_ids)
  with _ROWS_LOCK:
    lock = _ROWS_LOCKS.setdefault(key, threading.Lock())
  with lock:
    return _drawn_rows(*key)


@functools.lru_cache(maxsize=6)  # a task's 3 splits, for the 1-2 tasks a sweep's workers share
def _drawn_rows(task: str, difficulties: tuple[int, ...], split: str, count: int,
                data_ids: int) -> dict[str, np.ndarray]:
  arrays = tasks.rows(task, list(difficulties), split, count, data_ids=data_ids)
  for array in arrays.values():
    array.setflags(write=False)
  return arrays


def _device_rows(settings, point: Point, split: str, count: int) -> dict[str, jax.Array]:
  """A split's rows on the device: training mixes in `settings.easier` easier difficulties
  (Zoology's mixed training sets), validation and test are the point's difficulty alone."""
  difficulties = (tasks.easier(point.task, point.difficulty, settings.easier, settings.data_ids)
                  if split == "train" else [point.difficulty])
  arrays = _host_rows(point.task, tuple(difficulties), split, count, settings.data_ids)
  return {k: jnp.asarray(v) for k, v in arrays.items()}


def _save_partial(directory: str, point: Point, state, progress: dict) -> None:
  buffer = io.BytesIO()
  leaves = jax.device_get(jax.tree.leaves(state))
  np.savez(buffer, *leaves)
  write_atomic(os.path.join(directory, "partial", f"{point.name}.npz"), buffer.getvalue())
  write_atomic(os.path.join(directory, "partial", f"{point.name}.json"), json.dumps(progress))


def _load_partial(directory: str, point: Point, fresh_state):
  """(state, progress) saved for `point`, or (fresh_state, None)."""
  base = os.path.join(directory, "partial", point.name)
  if not (os.path.exists(base + ".json") and os.path.exists(base + ".npz")):
    return fresh_state, None
  with open(base + ".json") as f:
    progress = json.load(f)
  with np.load(base + ".npz") as data:
    leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
  treedef = jax.tree.structure(fresh_state)
  if treedef.num_leaves != len(leaves):
    raise ValueError(f"{base}.npz does not match the point's model; delete it to restart")
  return jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves]), progress


def _summary(lrs, seeds, val_accuracy, test: dict) -> dict:
  per_lr = {}
  for lr in sorted(set(lrs)):
    rs = [r for r, x in enumerate(lrs) if x == lr]
    per_lr[lr] = float(np.mean([val_accuracy[r] for r in rs]))
  best = max(per_lr, key=lambda lr: (per_lr[lr], -lr))  # ties: the smaller learning rate
  chosen = [r for r, x in enumerate(lrs) if x == best]
  return {"learning_rate": best, "val_accuracy_by_lr": {str(k): v for k, v in per_lr.items()},
          "test_accuracy": [float(test["accuracy"][r]) for r in chosen],
          "test_exact_match": [float(test["exact_match"][r]) for r in chosen],
          "seeds": [seeds[r] for r in chosen]}


def run_point(settings: ml_collections.ConfigDict, point: Point, directory: str, *,
              deadline: float | None = None, stop: threading.Event | None = None,
              log=print) -> dict:
  """Trains `point` (resuming its saved state) and writes and returns its result."""
  lrs, seeds = replica_grid(settings)
  cfg = model_config(settings, point)
  vocab = tasks.vocab_size(settings.data_ids)
  replicas = Replicas(cfg, vocab, train_spec(settings), lrs, seeds)
  pool = _device_rows(settings, point, "train", settings.train_examples)
  val = _device_rows(settings, point, "val", settings.val_examples)
  state, progress = _load_partial(directory, point, replicas.init())
  progress = progress or {"step": 0, "curve": [], "train_seconds": 0.0, "compile_seconds": 0.0,
                          "timed_steps": 0, "losses": []}
  length = int(pool["inputs"].shape[1])
  last_save, first_chunk = time.monotonic(), True
  while progress["step"] < settings.steps:
    step = progress["step"]
    count = min(settings.chunk_steps, settings.steps - step,
                settings.eval_every - step % settings.eval_every)
    indices = jnp.asarray(batch_indices(settings.train_examples, settings.batch_size, seeds,
                                        step, count))
    start = time.perf_counter()
    state, losses = replicas.train(state, pool, indices)
    losses = np.asarray(jax.device_get(losses))
    seconds = time.perf_counter() - start
    if first_chunk:  # a process's first call compiles
      progress["compile_seconds"] += seconds
    else:
      progress["train_seconds"] += seconds
      progress["timed_steps"] += count
    first_chunk = False
    progress["step"] = step + count
    if progress["step"] % settings.eval_every == 0 or progress["step"] == settings.steps:
      accuracy = replicas.evaluate(state[0], val, settings.eval_batch_size)["accuracy"]
      progress["curve"].append([progress["step"], accuracy.tolist()])
      progress["losses"].append([progress["step"], losses[-1].tolist()])
      log(f"{point.name} step {progress['step']}/{settings.steps} | val accuracy "
          f"{' '.join(f'{a:.2f}' for a in accuracy)}")
    out_of_time = ((deadline is not None and time.monotonic() > deadline)
                   or (stop is not None and stop.is_set()))
    if out_of_time or time.monotonic() - last_save > settings.checkpoint_seconds:
      _save_partial(directory, point, state, progress)
      last_save = time.monotonic()
    if out_of_time and progress["step"] < settings.steps:
      raise OutOfTime(point.name)
  test = replicas.evaluate(state[0], _device_rows(settings, point, "test",
                                                  settings.test_examples),
                           settings.eval_batch_size)
  val_accuracy = progress["curve"][-1][1]  # the loop scores validation at the last step
  tokens_per_step = len(lrs) * settings.batch_size * length
  result = {
      "point": point.__dict__ | {"name": point.name},
      "learning_rates": lrs, "seeds": seeds, "device": jax.devices()[0].device_kind,
      "params": replicas.num_params, "row_length": length,
      "state_size": decode_state_size(cfg, vocab, length),
      "val_accuracy": val_accuracy, "test_accuracy": test["accuracy"].tolist(),
      "test_exact_match": test["exact_match"].tolist(), "curve": progress["curve"],
      "losses": progress["losses"], "compile_seconds": progress["compile_seconds"],
      "train_seconds": progress["train_seconds"],
      "tokens_per_second": (tokens_per_step * progress["timed_steps"] / progress["train_seconds"]
                            if progress["train_seconds"] else None),
      "best": _summary(lrs, seeds, val_accuracy, test),
  }
  write_atomic(os.path.join(directory, "points", f"{point.name}.json"), json.dumps(result))
  for suffix in (".npz", ".json"):
    path = os.path.join(directory, "partial", point.name + suffix)
    if os.path.exists(path):
      os.remove(path)
  return result
