"""The fine-tuning protocol: per task, an LR sweep of warm-up + cosine fine-tunes with replay of
pre-training batches, the LR chosen on a held-out split, learning curves and held-out perplexity.

    result = protocol_for_run(run, evaluator, FinetuneSettings())   # run: trained_run.load_run
    result.write("<workdir>/finetune/protocol.json")
    result.report(run.step)  # the chosen LR's evaluation of each task, as an evaluator Report

Why. The earlier protocol (one run on all tasks at a constant LR from a fresh AdamW, no warm-up,
no replay) raised held-out perplexity by 10^3-10^8 in the review of `experiments/RESULTS.md`:
the arms forgot language modelling, so their "after fine-tuning" columns measured the damage, not
what they could retrieve. Each task (`FinetuneSettings.tasks`) is therefore fine-tuned on its own
from the pre-trained params, once per learning rate of the sweep, and for each run:
  schedule     linear warm-up over `warmup_fraction` of the steps, cosine decay to `end_lr_ratio`
               of the peak, fresh AdamW, no weight decay (`finetune.finetune_config`);
  replay       `replay_fraction` of every batch's rows are the run's own pre-training rows
               (`finetune.pretraining_rows`), carrying that share of the loss (`with_replay`);
  curriculum   phonebook only: the first `curriculum_fraction` of the steps draw books of
               `small_books` entries (asking at most a fifth of them), the rest full-context books
               (the task's sweep of 1-32 numbers asked) (`finetune_curriculum.py`);
  curve        every `eval_every` steps, the task's main metric and target loss on a held-out
               split (seed stream 2: neither the training stream 1 nor the evaluation stream 0,
               `finetune_heldout.py`), `heldout_examples` per difficulty; steps to 50% / 90% of it;
  perplexity   the `perplexity` task (held-out Milton prose) before and after.
The LR whose final held-out score is best is chosen (ties: the smaller LR), and only its params
are scored on the evaluation examples (`TaskFinetune.evaluation`).

Pruning (`prune_at`, successive halving). A task's sweep costs its LRs times its steps, several
times a small model's pre-training: 3 x 1,000 steps per task against 1,600 for the study's 50m
arms. With `prune_at=(s1, s2, ...)` every LR trains to s1, then only the better half (rounded
up) by held-out target loss at s1 trains on to s2, and so on to the end: (200, 400) of 1,000
steps over 3 LRs trains 600 + 400 + 600 = 1,600 steps instead of 3,000. A pruned LR's record
ends at its pruning step (`trained_steps`, `complete` False) and it cannot be chosen. Pausing an
LR at a pruning step and going on later trains exactly what an unpruned run trains
(`tests/test_train_finetune.py`), so a survivor's curve is the one it would have had.

Resuming. Given a folder (`protocol_for_run(..., progress_dir=)`), each task keeps there its
finished LRs (record and params) and the running LR's state at its newest curve point
(`finetune_progress.py`); the same call after a kill goes on from them, and a sweep resumed so
equals one never stopped (`tests/test_train_finetune.py`).

Settings (`FinetuneSettings`, defaults and why):
  learning_rates   (3e-5, 1e-4, 3e-4): 1%, 3% and 10% of the default pre-training peak 3e-3 in
                   half-decade steps; A.9's 5e-5 was a quarter of a 1.4B model's peak, but without
                   replay. Scale them with the run's peak (`lr_scale`, default 1). With
                   `extra_learning_rates` n > 0, while the best is the largest tried, the next
                   half-decade up is tried too, up to n more.
  steps x batch    6,250 x 32 with half the rows replayed: 100,000 task rows, at least 1e5
                   examples (rows pack several short ones), enough for the curves to plateau.
  eval_every 250, heldout_examples 16: 26 curve points of cheap evaluations.
  prune_at         (): every LR trains all its steps unless a caller asks for pruning.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import json
import math
import os
import time
from typing import Any

import ml_collections

from birdie_jax.console import log_progress
from birdie_jax.errors import ConfigError
from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.layout import Row
from birdie_jax.evals.report import Report, TaskResult
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import Task
from birdie_jax.train import finetune as ft
from birdie_jax.train.finetune_curriculum import training_stages
from birdie_jax.train.finetune_progress import MemoryProgress, SweepProgress
from birdie_jax.train.finetune_heldout import (heldout_scores, perplexity, selection_examples,
                                               task_result)
from birdie_jax.workdir import write_atomic

ReplaySource = Callable[[], Iterator[Row]]  # a fresh iterator of pre-training rows per run


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  """Every knob of the protocol (see the module docstring for why each default)."""

  tasks: tuple[str, ...] = ("phonebook", "mqar")  # each fine-tuned on its own
  learning_rates: tuple[float, ...] = (3e-5, 1e-4, 3e-4)  # the sweep (peak of each run)
  lr_scale: float = 1.0  # multiplies the sweep (e.g. run peak / 3e-3)
  extra_learning_rates: int = 0  # while the best LR is the sweep's largest, add the next
  # half-decade up (x sqrt(10)), at most this many times: a best LR at the sweep's edge says the
  # sweep did not bracket the optimum
  steps: int = 6250  # optimizer steps per run
  batch_size: int = 32  # rows per step, replayed ones included
  replay_fraction: float = 0.5  # share of rows (and of the loss) from pre-training
  warmup_fraction: float = 0.1  # linear warm-up share of the steps
  end_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
  weight_decay: float = 0.0  # AdamW decay (0: none pulls the weights toward zero)
  curriculum_fraction: float = 0.5  # phonebook: share of steps on small books
  small_books: tuple[int, ...] = (10, 20, 30, 40, 50)  # phonebook: small books' entries
  eval_every: int = 250  # steps between learning-curve points
  prune_at: tuple[int, ...] = ()  # successive halving: after each of these steps (multiples of
  # eval_every) only the better half, rounded up, of the LRs still training go on, ranked by
  # held-out target loss there; () trains every LR to the end
  heldout_examples: int = 16  # held-out (stream 2) examples per difficulty per curve point
  perplexity_examples: int = 8  # held-out prose windows per length for perplexity
  seed: int = 1  # seeds the training and held-out examples
  log_every: int = 50  # steps between loss lines

  def __post_init__(self):
    if not self.tasks or not self.learning_rates or min(self.learning_rates) < 0:
      raise ConfigError("fine-tuning needs tasks and learning rates >= 0")
    if not 0.0 <= self.replay_fraction < 1.0 or not 0.0 <= self.curriculum_fraction <= 1.0:
      raise ConfigError("replay_fraction must be in [0, 1) and curriculum_fraction in [0, 1]")
    if self.extra_learning_rates < 0:
      raise ConfigError(f"extra_learning_rates must be >= 0, got {self.extra_learning_rates}")
    for name in ("steps", "batch_size", "eval_every", "heldout_examples", "perplexity_examples",
                 "log_every"):
      if getattr(self, name) < 1:
        raise ConfigError(f"fine-tuning {name} must be >= 1, got {getattr(self, name)}")
    stops = (0, *self.prune_at, self.steps)
    if (any(a >= b for a, b in zip(stops, stops[1:]))
        or any(s % self.eval_every for s in self.prune_at)):
      raise ConfigError(f"prune_at must rise strictly between 0 and steps ({self.steps}) in "
                        f"multiples of eval_every ({self.eval_every}), got {self.prune_at}")

  @property
  def replay_rows(self) -> int:
    """Replayed rows per batch (at least one row is left for the task)."""
    return min(int(round(self.batch_size * self.replay_fraction)), self.batch_size - 1)

  @property
  def schedule(self) -> ft.Schedule:
    """The schedule of every run."""
    return ft.Schedule(self.warmup_fraction, self.end_lr_ratio, self.weight_decay)


@dataclasses.dataclass(frozen=True)
class CurvePoint:
  """The held-out split after `step` fine-tuning steps (0: the pre-trained params)."""

  step: int
  score: float  # the task's main metric
  loss: float  # mean target loss per trained token


def steps_to(curve: Sequence[CurvePoint], threshold: float) -> int | None:
  """The first step whose score reaches `threshold` (None if none does)."""
  return next((p.step for p in curve if p.score >= threshold), None)


@dataclasses.dataclass(frozen=True)
class LearningRateRun:
  """One fine-tune of one task at one learning rate."""

  task: str
  learning_rate: float
  steps: int
  examples_seen: int  # task examples trained on (rows pack several short ones)
  curve: tuple[CurvePoint, ...]
  losses: tuple[tuple[int, float], ...]  # (step, training loss, replay included)
  perplexity_before: float
  perplexity_after: float
  seconds: float
  trained_steps: int | None = None  # fewer than `steps` when pruned there (None: all)

  @property
  def complete(self) -> bool:
    """Trained all its steps (not pruned)."""
    return self.trained_steps in (None, self.steps)

  @property
  def final_score(self) -> float:
    """The held-out score after the last step trained (what the LR is chosen by)."""
    return self.curve[-1].score

  def loss_at(self, step: int) -> float:
    """The held-out target loss at curve point `step` (what pruning ranks by)."""
    return next(p.loss for p in self.curve if p.step == step)

  @property
  def steps_to_50(self) -> int | None:
    return steps_to(self.curve, 0.5)

  @property
  def steps_to_90(self) -> int | None:
    return steps_to(self.curve, 0.9)

  def to_json(self) -> dict[str, Any]:
    """A JSON-ready dict, the derived fields included."""
    return {**dataclasses.asdict(self), "final_score": self.final_score,
            "steps_to_50": self.steps_to_50, "steps_to_90": self.steps_to_90}

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> LearningRateRun:
    """The run `to_json` wrote (its derived fields recomputed)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in record.items() if k in fields}
    values["curve"] = tuple(CurvePoint(**p) for p in record["curve"])
    values["losses"] = tuple((int(s), float(v)) for s, v in record["losses"])
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class TaskFinetune:
  """A task's sweep, its chosen learning rate and that run's evaluation."""

  task: str
  metric: str  # the main metric of the curves
  runs: tuple[LearningRateRun, ...]
  chosen_learning_rate: float
  evaluation: TaskResult  # the evaluation examples (stream 0), chosen LR's params

  @property
  def chosen(self) -> LearningRateRun:
    return next(r for r in self.runs if r.learning_rate == self.chosen_learning_rate)

  def to_json(self) -> dict[str, Any]:
    return {"task": self.task, "metric": self.metric, "runs": [r.to_json() for r in self.runs],
            "chosen_learning_rate": self.chosen_learning_rate, "chosen": self.chosen.to_json(),
            "evaluation": dataclasses.asdict(self.evaluation)}


@dataclasses.dataclass(frozen=True)
class ProtocolResult:
  """Every task's fine-tuning, with the settings that made it."""

  settings: FinetuneSettings
  tasks: dict[str, TaskFinetune]

  def to_json(self) -> dict[str, Any]:
    return {"settings": dataclasses.asdict(self.settings),
            "tasks": {name: t.to_json() for name, t in self.tasks.items()}}

  def write(self, path: str) -> None:
    write_atomic(path, json.dumps(self.to_json(), indent=2))

  def report(self, step: int, evaluator: Evaluator) -> Report:
    """The chosen runs' evaluations as one report (each task from its own fine-tune)."""
    return Report(step=int(step), layout=evaluator.layout.kind, seq_len=evaluator.seq_len,
                  examples=evaluator.settings.examples,
                  tasks={name: t.evaluation for name, t in self.tasks.items()})


def choose(runs: Sequence[LearningRateRun], higher_is_better: bool = True) -> LearningRateRun:
  """The complete run with the best final held-out score; ties go to the smaller learning rate."""
  sign = 1.0 if higher_is_better else -1.0
  return max((r for r in runs if r.complete), key=lambda r: (sign * r.final_score,
                                                             -r.learning_rate))


def ranked_at(runs: dict[int, LearningRateRun], step: int) -> list[int]:
  """The indices of `runs` (index -> run trained to at least `step`), best first by held-out
  target loss at `step`, ties to the smaller LR. Loss, not the task's score: early in a
  fine-tune every LR's accuracy can sit at the same floor."""
  return sorted(runs, key=lambda i: (runs[i].loss_at(step), runs[i].learning_rate))


def survivors(runs: dict[int, LearningRateRun], step: int) -> list[int]:
  """Successive halving at `step`: the better half, rounded up, of `runs` (`ranked_at`)."""
  ranked = ranked_at(runs, step)
  return sorted(ranked[:math.ceil(len(ranked) / 2)])


def _counted(batches: Iterator[Row], task_rows: int, seen: list[int]) -> Iterator[Row]:
  """`batches`, adding each batch's task examples (segments of its first rows) to `seen[0]`."""
  for batch in batches:
    seen[0] += int(batch["segment_ids"][:task_rows].max(axis=1).sum())
    yield batch


def finetune_one(evaluator: Evaluator, config: ml_collections.ConfigDict, params, task: Task,
                 learning_rate: float, settings: FinetuneSettings, replay: ReplaySource | None,
                 heldout, ppl_before: float, progress: SweepProgress | MemoryProgress,
                 index: int = 0, until: int | None = None) -> tuple[LearningRateRun, Any]:
  """One fine-tune of `task` from `params` at `learning_rate` up to step `until` (default: all
  `settings.steps`); (its record, its params). Its state is kept in `progress` as the sweep's
  LR `index` (at every curve point on disk; at `until` at least), and a kept state is resumed
  from."""
  until = settings.steps if until is None else until
  replay_rows = settings.replay_rows if replay is not None else 0
  task_rows = settings.batch_size - replay_rows
  stages = training_stages(evaluator, task, settings.steps, settings.curriculum_fraction,
                           settings.small_books)
  seen = [0]
  batches = _counted(ft.task_batches(evaluator, stages, rows=task_rows, seed=settings.seed),
                     task_rows, seen)
  if replay_rows:
    batches = ft.with_replay(batches, replay(), rows=replay_rows,
                             fraction=settings.replay_fraction)
  kept = progress.running_meta(index)
  if kept is not None:
    curve = [CurvePoint(**p) for p in kept["curve"]]
    log_progress(f"fine-tune {task.name} lr {learning_rate:.2e}: resuming after step "
                 f"{kept['step']}")
  else:
    curve = [CurvePoint(0, *heldout_scores(evaluator, task, params, heldout))]
  earlier = kept["seconds"] if kept is not None else 0.0
  start = time.perf_counter()

  def keep(step: int, state, losses: list) -> None:
    if progress.keeps_every_point or step == until:
      progress.save_running(index, step, state, {
          "step": step, "curve": [dataclasses.asdict(p) for p in curve], "losses": losses,
          "seconds": earlier + time.perf_counter() - start})

  tuned, losses = ft.train(
      evaluator, config, params, batches, steps=settings.steps, batch_size=settings.batch_size,
      learning_rate=learning_rate, schedule=settings.schedule, seed=settings.seed,
      log_every=settings.log_every, every=settings.eval_every,
      on_eval=lambda s, p: curve.append(CurvePoint(s, *heldout_scores(evaluator, task, p,
                                                                      heldout))),
      resume=(lambda setup: progress.restore_running(index, setup)) if kept else None,
      prior_losses=kept["losses"] if kept else (), on_checkpoint=keep,
      until=until if until < settings.steps else None)
  run = LearningRateRun(
      task=task.name, learning_rate=learning_rate, steps=settings.steps, examples_seen=seen[0],
      curve=tuple(curve), losses=tuple((int(s), float(v)) for s, v in losses),
      perplexity_before=ppl_before,
      perplexity_after=perplexity(evaluator, tuned, settings.perplexity_examples, settings.seed),
      seconds=earlier + time.perf_counter() - start, trained_steps=until)
  log_progress(f"fine-tune {task.name} lr {learning_rate:.2e}: held-out {task.metrics[0]} "
               f"{run.final_score:.3f} after step {until}, perplexity {ppl_before:.2f} -> "
               f"{run.perplexity_after:.2f}")
  return run, tuned


def finetune_task(evaluator: Evaluator, config: ml_collections.ConfigDict, params,
                  task_name: str, settings: FinetuneSettings, replay: ReplaySource | None,
                  progress_dir: str | None = None, identity: dict[str, Any] | None = None
                  ) -> TaskFinetune:
  """The LR sweep of one task from `params`, the LR chosen on the held-out split, and the
  chosen params scored on the evaluation examples. With `progress_dir` (`finetune_progress`),
  finished LRs and the running one's newest curve point are kept there and a call after a kill
  goes on from them; `identity` (JSON-ready) names what `params` are (e.g. the pre-trained run
  and step), so a folder from other params stops the start."""
  task = task_registry.build_tasks([task_name], evaluator.context)[0]
  progress = MemoryProgress() if progress_dir is None else SweepProgress(progress_dir, {
      "task": task_name, "settings": dataclasses.asdict(settings), **(identity or {})})
  heldout = {d: selection_examples(task, settings.seed, d, settings.heldout_examples)
             for d in task.sweep}
  ppl_before = perplexity(evaluator, params, settings.perplexity_examples, settings.seed)
  rates = [lr * settings.lr_scale for lr in settings.learning_rates]
  runs: dict[int, LearningRateRun] = {}

  def advance(index: int, stop: int) -> LearningRateRun:
    """LR `index` trained up to `stop`: its record from `progress` when it has one, else trained
    on from where it was kept."""
    record = progress.finished(index) or (progress.partial(index, stop)
                                          if stop < settings.steps else None)
    if record is not None:
      run = LearningRateRun.from_json(record)
      log_progress(f"fine-tune {task.name} lr {run.learning_rate:.2e}: step {stop} reached "
                   f"earlier, held-out {task.metrics[0]} {run.final_score:.3f}")
      return run
    run, tuned = finetune_one(evaluator, config, params, task, rates[index], settings, replay,
                              heldout, ppl_before, progress, index, until=stop)
    if stop == settings.steps:
      progress.finish(index, run.to_json(), tuned)
    else:
      progress.keep_partial(index, stop, run.to_json())
    return run

  def best_of(indices: Sequence[int], stop: int) -> int:
    """The best of `indices` at `stop`: the final choice at the end, else by held-out loss."""
    if stop == settings.steps:
      chosen = choose([runs[i] for i in indices], task.higher_is_better)
      return next(i for i in indices if runs[i] is chosen)
    return ranked_at({i: runs[i] for i in indices}, stop)[0]

  def release_losers() -> None:
    """Only the best complete LR's params stay in memory (`MemoryProgress`; on disk, all)."""
    done = [i for i, r in runs.items() if r.complete]
    if done:
      best = best_of(done, settings.steps)
      progress.release_params([i for i in done if i != best])

  alive = list(range(len(rates)))
  for round_index, stop in enumerate((*settings.prune_at, settings.steps)):
    for index in alive:
      runs[index] = advance(index, stop)
      release_losers()
    while (round_index == 0 and best_of(alive, stop) == max(alive, key=rates.__getitem__)
           and len(rates) < len(settings.learning_rates) + settings.extra_learning_rates):
      rates.append(max(rates) * math.sqrt(10.0))  # the best is at the top edge: go on up
      alive.append(len(rates) - 1)
      runs[alive[-1]] = advance(alive[-1], stop)
      release_losers()
    if stop < settings.steps:
      kept = survivors({i: runs[i] for i in alive}, stop)
      for index in alive:
        if index not in kept and progress.finished(index) is None:
          progress.finish(index, runs[index].to_json())  # pruned: its record, no params
      alive = kept
  best = best_of(alive, settings.steps)
  ordered = [runs[i] for i in sorted(runs)]
  best_params = progress.params(best, params)
  evaluation = task_result(evaluator, task, best_params, evaluator.examples.get(task.name) or {
      d: task.examples(evaluator.settings.seed, d, evaluator.settings.examples)
      for d in task.sweep})
  return TaskFinetune(task=task.name, metric=task.metrics[0], runs=tuple(ordered),
                      chosen_learning_rate=runs[best].learning_rate, evaluation=evaluation)


def run_protocol(evaluator: Evaluator, config: ml_collections.ConfigDict, params,
                 settings: FinetuneSettings, replay: ReplaySource | None,
                 progress_dir: str | None = None,
                 identity: dict[str, Any] | None = None) -> ProtocolResult:
  """Every task of `settings` fine-tuned on its own from `params` (left intact); `replay`
  makes the pre-training rows (None: no replay). With `progress_dir`, each task keeps its
  progress in `<progress_dir>/<task>` (`finetune_task`)."""
  return ProtocolResult(settings, {
      name: finetune_task(evaluator, config, params, name, settings, replay,
                          None if progress_dir is None else os.path.join(progress_dir, name),
                          identity)
      for name in settings.tasks})


def protocol_for_run(run, evaluator: Evaluator, settings: FinetuneSettings,
                     progress_dir: str | None = None) -> ProtocolResult:
  """`run_protocol` on a `trained_run.TrainedRun`, replaying its own pre-training rows; with
  `progress_dir` (e.g. `<workdir>/finetune/checkpoints`), resumable, tied to the run's
  checkpoint step."""

  def replay() -> Iterator[Row]:
    return ft.pretraining_rows(run.config, run.tokenizer, seq_len=evaluator.seq_len,
                               seed=run.config.seed)

  return run_protocol(evaluator, run.config, run.params, settings, replay, progress_dir,
                      identity={"pretrained_step": int(run.step)})


def settings_from(config: ml_collections.ConfigDict | dict) -> FinetuneSettings:
  """`FinetuneSettings` from a config section or dict of some of its fields (lists to tuples);
  ConfigError for unknown keys."""
  values = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  known = {f.name for f in dataclasses.fields(FinetuneSettings)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ConfigError(f"unknown fine-tuning setting {unknown[0]!r}")
  return FinetuneSettings(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in values.items()})

