"""One fine-tuning run on evaluation tasks: its schedule, its batches (task rows plus replayed
pre-training rows) and its training loop. The protocol that sweeps learning rates, one task at a
time, and keeps learning curves is `finetune_protocol.py`.

Batches. Examples come from the tasks' own generators (`Task.training_examples`, seed stream 1,
disjoint from the evaluation's stream 0), laid out exactly as the evaluator prompts them (same
layout and paradigm tokens), packed greedily into rows of the evaluation context and trained on
their targets only (the `scored` tokens). `with_replay` appends rows of the run's own pre-training
pipeline (`pretraining_rows`) to every batch and weights the loss so that the replayed tokens carry
`fraction` of it and the task tokens the rest, whatever their token counts: the model keeps
practising its language modelling while it learns the task.

Schedule. `finetune_config` derives the run's `train` group: linear warm-up over a fraction of the
steps, cosine decay to `end_lr_ratio` of the peak (`train/optimizer.py`), a fresh AdamW. The
default weight decay is 0: decay pulls the weights toward zero, not toward the pre-trained ones.

    params, losses = finetune(evaluator, config, params, task_names=["phonebook"], steps=1000,
                              batch_size=16, learning_rate=1e-4)
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import itertools
import queue
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from birdie_jax.console import log_progress
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.sources import run_documents
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.layout import Layout, Row
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import Task
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.state import TrainSetup, TrainState, make_train_setup
from birdie_jax.train.step import make_train_step


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How one fine-tuning run's learning rate moves (see the module docstring)."""

  warmup_fraction: float = 0.1  # share of the steps of linear warm-up from 0
  end_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak
  weight_decay: float = 0.0  # AdamW decoupled decay (0: no pull toward zero)


def finetune_config(config: ml_collections.ConfigDict, *, steps: int, batch_size: int,
                    seq_len: int, learning_rate: float,
                    schedule: Schedule = Schedule()) -> ml_collections.ConfigDict:
  """`config` with its `train` group set for fine-tuning: `steps` of `batch_size` rows of
  `seq_len`, warm-up then cosine to `learning_rate * schedule.end_lr_ratio`."""
  if steps < 1 or batch_size < 1:
    raise ConfigError(f"fine-tuning needs steps and batch_size >= 1, got {steps}, {batch_size}")
  if not 0.0 <= schedule.warmup_fraction < 1.0:
    raise ConfigError(f"warmup_fraction must be in [0, 1), got {schedule.warmup_fraction}")
  out = ml_collections.ConfigDict(config.to_dict())
  out.train.update(steps=steps, batch_size=batch_size, seq_len=seq_len,
                   learning_rate=learning_rate, end_lr_ratio=schedule.end_lr_ratio,
                   warmup_steps=int(round(schedule.warmup_fraction * steps)),
                   weight_decay=schedule.weight_decay)
  return out


def pack_stream(layout: Layout, segments: Iterator[Row], seq_len: int, rows: int
                ) -> Iterator[Row]:
  """Endless (rows, seq_len) batches packed greedily from `segments`, in order (an example is
  never split; one that starts a row past the batch opens the next batch)."""
  groups: list[list[Row]] = [[]]
  for segment in segments:
    if sum(len(s["inputs"]) for s in groups[-1]) + len(segment["inputs"]) > seq_len:
      groups.append([])
    groups[-1].append(segment)
    if len(groups) > rows:
      yield layout.pack([s for group in groups[:rows] for s in group], seq_len)
      groups = groups[rows:]


Choice = tuple[Task, Sequence[int]]  # a task and the difficulties its examples are drawn from


def task_segments(evaluator: Evaluator, choices: Sequence[Choice], seed: int,
                  indices: Iterator[int]) -> Iterator[Row]:
  """Laid-out training examples (stream 1): example `i = next(indices)` is training example i of
  `choices[i % len(choices)]`, so the choices take turns."""
  for index in indices:
    task, pool = choices[index % len(choices)]
    example = task.training_examples(seed, index, 1, pool)[0]
    yield evaluator.layout.segment(example.prompt, example.target, evaluator.paradigm_id(task),
                                   example.scored)


Stage = tuple[int, Sequence[Choice]]  # (steps, the choices their examples take turns from)


def task_batches(evaluator: Evaluator, stages: Sequence[Stage], *, rows: int, seed: int
                 ) -> Iterator[Row]:
  """Batches of `rows` task rows, stage after stage (a curriculum): each stage's steps draw from
  its own choices; example indices run on across stages (no example repeats)."""
  indices = itertools.count()
  for steps, choices in stages:
    packed = pack_stream(evaluator.layout, task_segments(evaluator, choices, seed, indices),
                         evaluator.seq_len, rows)
    for _ in range(steps):
      yield next(packed)


def training_batches(evaluator: Evaluator, task_names: Sequence[str], *, batch_size: int,
                     seed: int, difficulties: dict[str, Sequence[int]] | None = None
                     ) -> Iterator[Row]:
  """Endless packed batches of fine-tuning examples, the tasks taking turns example by example.

  `difficulties` may replace a task's sweep as the pool its training difficulties are drawn from
  (e.g. phonebook: 1..32 numbers, as A.9 trains); those that do not fit the context are dropped.
  """
  tasks = task_registry.build_tasks(task_names, evaluator.context)
  choices = [(t, [d for d in (difficulties or {}).get(t.name, t.sweep) if t.fits(d)])
             for t in tasks]
  segments = task_segments(evaluator, choices, seed, itertools.count())
  return pack_stream(evaluator.layout, segments, evaluator.seq_len, batch_size)


def pretraining_rows(config: ml_collections.ConfigDict, tokenizer: Tokenizer, *, seq_len: int,
                     seed: int) -> Iterator[Row]:
  """Endless rows of the run's own pre-training pipeline (its training documents and objective
  mixture at its starting weights), laid out at `seq_len`. Every process draws the same rows."""
  documents = run_documents(config.data, "train")  # data.source, or a data.sources mixture
  mixture = make_mixture(tokenizer, curriculum=config.curriculum, seq_len=seq_len,
                         length_scale=config.data.length_scale,
                         class_weights=config.data.class_weights)
  dataset = make_train_dataset(documents, tokenizer, seq_len=seq_len, batch_size=8, seed=seed,
                               make_example=mixture, gap=config.data.gap)
  for batch in dataset:
    for i in range(len(batch["inputs"])):
      yield {k: v[i] for k, v in batch.items()}


def with_replay(batches: Iterator[Row], replay: Iterator[Row], *, rows: int,
                fraction: float) -> Iterator[Row]:
  """Each of `batches` with `rows` rows of `replay` appended, loss weights rescaled so that the
  replayed tokens carry `fraction` of the batch's loss and the task tokens `1 - fraction`."""
  for batch in batches:
    if rows == 0:
      yield batch
      continue
    extra = [next(replay) for _ in range(rows)]
    out = {k: np.concatenate([v, np.stack([r[k] for r in extra]).astype(v.dtype)])
           for k, v in batch.items()}
    mask = out["loss_mask"]
    task, old = mask[:-rows], mask[-rows:]
    out["loss_mask"] = np.concatenate([task * (1.0 - fraction) / max(task.sum(), 1.0),
                                       old * fraction / max(old.sum(), 1.0)]).astype(np.float32)
    yield out


def train(evaluator: Evaluator, config: ml_collections.ConfigDict, params,
          batches: Iterator[Row], *, steps: int, batch_size: int, learning_rate: float,
          schedule: Schedule = Schedule(), seed: int = 0, log_every: int = 50,
          every: int = 0, on_eval: Callable[[int, object], None] | None = None,
          resume: Callable[[TrainSetup], tuple[int, TrainState] | None] | None = None,
          prior_losses: Sequence[tuple[int, float]] = (),
          on_checkpoint: Callable[[int, TrainState, list], None] | None = None,
          until: int | None = None):
  """`params` (left intact) after `steps` steps on `batches`; returns (params, [(step, loss)]).

  `on_eval(step, params)` runs every `every` steps and after the last one (0: never);
  `on_checkpoint(step, state, losses)` runs after it at each of those steps but the last, to keep
  the state. `until` (< `steps`, a multiple of `every`) stops after that step instead,
  the schedule still that of `steps` steps: the state kept there is resumed later (a pruned
  sweep). `resume(setup)` may return a (step, state) saved so: training goes on after that
  step, the batches it had used skipped, `prior_losses` (that run's loss log) leading the log.
  Batches are made one step ahead in a thread, so the host builds the next batch while the
  device trains on this one (a step of the 50m study model took 0.2 s with the two in series,
  0.11 s for pre-training's overlapped pipeline, H200).
  """
  ft_config = finetune_config(config, steps=steps, batch_size=batch_size,
                              seq_len=evaluator.seq_len, learning_rate=learning_rate,
                              schedule=schedule)
  mesh = evaluator.placed.mesh
  setup = make_train_setup(ft_config, evaluator.tokenizer.vocab_size, mesh)

  def init(params) -> TrainState:  # copies: the train step donates its state
    return TrainState(step=jnp.zeros((), jnp.int32), params=jax.tree.map(jnp.copy, params),
                      opt_state=setup.tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32))

  pi, pc = jax.process_index(), jax.process_count()
  local = batch_size // pc
  with jax.set_mesh(mesh):
    restored = resume(setup) if resume is not None else None
    done, state = restored if restored is not None else (0, None)
    if state is None:
      state = jax.jit(init, out_shardings=setup.state_shardings)(params)
    losses = [tuple(x) for x in prior_losses] if done else []
    step_fn = make_train_step(setup, ft_config.train)
    start = time.perf_counter()
    last = steps if until is None else until
    with _Prefetched(itertools.islice(batches, done, None)) as ahead:
      for step in range(done + 1, last + 1):
        batch = {k: jax.make_array_from_process_local_data(
            batch_sharding(mesh, setup.rules, v.ndim), v[pi * local:(pi + 1) * local])
                 for k, v in next(ahead).items()}
        state, metrics = step_fn(state, batch)
        loss = float(jax.device_get(metrics["loss"]))  # one step in flight: CPU collectives
        if step % log_every == 0 or step in (1, steps):  # abort when many programs queue
          losses.append((step, loss))
          log_progress(f"fine-tune step {step}/{steps} | lr {learning_rate:.2e} | loss "
                       f"{losses[-1][1]:.4f} | {time.perf_counter() - start:.0f}s")
        if every and (step % every == 0 or step == steps):
          if on_eval is not None:
            on_eval(step, state.params)
          if on_checkpoint is not None and step < steps:
            on_checkpoint(step, state, list(losses))
  return state.params, np.array(losses).reshape(-1, 2)


class _Prefetched:
  """`iterator`'s items made `depth` ahead in a daemon thread; its exceptions re-raised in
  order. A context manager: leaving it stops the thread at its next item."""

  _END = object()

  def __init__(self, iterator: Iterator, depth: int = 2):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, args=(iterator,), daemon=True,
                                    name="finetune-batches")
    self._thread.start()

  def _fill(self, iterator: Iterator) -> None:
    try:
      for item in iterator:
        if not self._put((item, None)):
          return
      self._put((self._END, None))
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by __next__)
      self._put((self._END, e))

  def _put(self, entry: tuple) -> bool:
    """Queues `entry`, waiting for room; False when stopped first."""
    while not self._stop.is_set():
      try:
        self._queue.put(entry, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def __enter__(self) -> "_Prefetched":
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()

  def __iter__(self) -> "_Prefetched":
    return self

  def __next__(self):
    item, error = self._queue.get()
    if error is not None:
      raise error
    if item is self._END:
      raise StopIteration
    return item


def finetune(evaluator: Evaluator, config: ml_collections.ConfigDict, params, *,
             task_names: Sequence[str], steps: int, batch_size: int, learning_rate: float,
             seed: int = 0, log_every: int = 50,
             difficulties: dict[str, Sequence[int]] | None = None,
             schedule: Schedule = Schedule()):
  """`params` after `steps` steps on `task_names`' examples together (no replay, one learning
  rate, `schedule`); returns (params, losses). The protocol is `finetune_protocol.run_protocol`."""
  batches = training_batches(evaluator, task_names, batch_size=batch_size, seed=seed,
                             difficulties=difficulties)
  return train(evaluator, config, params, batches, steps=steps, batch_size=batch_size,
               learning_rate=learning_rate, schedule=schedule, seed=seed, log_every=log_every)
