"""Runs the evaluation tasks on a model's params: `Evaluator(config, tokenizer, placed).run(params)`
(`placed`: the model's `models.placed.PlacedModel`; a training `TrainSetup` is one).

The evaluator builds its tasks and their examples once (the same examples at every evaluation),
then each `run`:
  GENERATE tasks   decode greedily with the model's recurrent state / KV cache
                   (`decoding.generate`), prompts left-padded to the context length so one
                   compiled loop serves every batch of a task;
  FORWARD, CHOICE  one teacher-forced forward pass per row of (context length) positions, giving
                   per-token losses and argmax predictions of the targets; every such task shares
                   one compiled function.
GENERATE tasks get that teacher-forced pass over their reference targets too (the same prompts,
the same layout): `tf_accuracy` and `target_loss` (`task.TEACHER_FORCED`) follow the task's own
metrics in every row and in `overall`, and in `TaskResult.metrics` (`Task.reported_metrics`).
Prompts follow the run's training layout (`eval.layout`, `auto`: `prefix` for Birdie curricula and
bidirectional models, `continuation` for next-token prediction), with the paradigm token of the
task's objective class where the curriculum has one (`eval.paradigm` for tasks without their own).
Every process computes the same thing on replicated inputs, so the results agree across hosts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from birdie_jax.data import special_tokens
from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.evals import scoring
from birdie_jax.evals import settings as eval_settings
from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.layout import Layout, Row
from birdie_jax.evals.report import Report, TaskResult
from birdie_jax.evals.task import (CHOICE, Example, GENERATE, TEACHER_FORCED, TargetScores, Task,
                                   TaskContext)
from birdie_jax.models.decoding import generate
from birdie_jax.models.forward import batch_logits
from birdie_jax.models.placed import PlacedModel
from birdie_jax.parallel.sharding import axis_rules

_MIN_NEW_TOKENS = 8


def settings_of(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's `eval` section, or the defaults for configs that have none."""
  return config.eval if "eval" in config else eval_settings.default_settings()


def layout_kind(setting: str, config: ml_collections.ConfigDict) -> str:
  """`eval.layout` resolved: 'auto' is 'continuation' only for next-token prediction on a causal
  model (what such a model was trained on), else 'prefix'."""
  if setting != "auto":
    return setting
  causal_ntp = config.curriculum == "ntp" and not config.model.bidirectional
  return "continuation" if causal_ntp else "prefix"


def _power_of_two(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def _batches(items: Sequence, size: int) -> list[list]:
  """`items` in batches of exactly `size`, the last one filled up with copies of its first item."""
  out = [list(items[i:i + size]) for i in range(0, len(items), size)]
  if out:
    out[-1] += [out[-1][0]] * (size - len(out[-1]))
  return out


def _summary(task: Task, means: dict[str, float]) -> dict[str, float]:
  """`task.summarize` of the means, with the teacher-forced means kept whatever it returns."""
  return {**task.summarize(means), **{m: means[m] for m in TEACHER_FORCED if m in means}}


class Evaluator:
  """The evaluation tasks of one run, with their examples, ready to score params."""

  def __init__(self, config: ml_collections.ConfigDict, tokenizer: Tokenizer, placed: PlacedModel,
               *, settings: ml_collections.ConfigDict | None = None):
    """Builds the tasks and their examples; ConfigError for bad settings or tasks that cannot
    fit the context. `settings` replaces the config's `eval` section."""
    self.settings = settings_of(config) if settings is None else settings
    eval_settings.validate_settings(self.settings)
    self.placed = placed
    self.tokenizer = tokenizer
    self.seq_len = self.settings.seq_len or config.train.seq_len
    self.layout = Layout(layout_kind(self.settings.layout, config),
                         begin_id=tokenizer.special_id(special_tokens.BEGIN),
                         pad_id=tokenizer.pad_id)
    self.context = TaskContext(tokenizer, self.seq_len)
    self.tasks = task_registry.build_tasks(task_registry.parse_names(self.settings.tasks),
                                           self.context)
    curriculum = run_curriculum(config)
    self._classes = curriculum.classes if curriculum.append_prob is not None else ()
    self.examples = {task.name: {d: task.examples(self.settings.seed, d, self.settings.examples)
                                 for d in task.sweep} for task in self.tasks}
    self._replicated = NamedSharding(placed.mesh, PartitionSpec())
    self._forward = jax.jit(self._forward_fn, out_shardings=self._replicated)
    self._gather = jax.jit(lambda x: x, out_shardings=self._replicated)

  def is_due(self, step: int) -> bool:
    """Whether training step `step` ends with an evaluation (`eval.every`; 0 never)."""
    return self.settings.every > 0 and step % self.settings.every == 0

  def paradigm_id(self, task: Task) -> int | None:
    """The paradigm token a task's prompts start with in the prefix layout, if the curriculum
    trained one: the task's own class, else `eval.paradigm`."""
    if self.layout.kind != "prefix":
      return None
    for name in (task.paradigm, self.settings.paradigm):
      if name and name in self._classes:
        return self.tokenizer.special_id(special_tokens.PARADIGMS[name])
    return None

  def _forward_fn(self, params, batch: Row) -> tuple[jax.Array, jax.Array]:
    logits = batch_logits(self.placed, params, batch)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return losses, jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def _place(self, batch: Row) -> dict[str, jax.Array]:
    return {k: jax.device_put(v, self._replicated) for k, v in batch.items()}

  def _target_scores(self, params, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                    int | None]]) -> list[TargetScores]:
    """(prompt, target, scored, paradigm id) rows -> the model's scores of each target."""
    out = []
    for group in _batches(rows, self.settings.batch_size):
      segments = [self.layout.segment(p, t, pid, s) for p, t, s, pid in group]
      batch = self.layout.pack(segments, self.seq_len, one_per_row=True)
      losses, predictions = jax.device_get(self._forward(params, self._place(batch)))
      for i, (prompt, target, _, pid) in enumerate(group):
        start = self.layout.target_start(prompt, pid)
        span = slice(start, start + len(target))
        out.append(TargetScores(losses=np.asarray(losses[i, span]),
                                predictions=np.asarray(predictions[i, span])))
    return out[:len(rows)]

  def _generations(self, params, prompts: list[np.ndarray], paradigm_id: int | None,
                   max_new_tokens: int) -> list[np.ndarray]:
    """Greedy continuations of `prompts` (each `max_new_tokens` ids)."""
    out = []
    model = self.placed.model(params)
    for group in _batches(prompts, self.settings.batch_size):
      batch = self._place(self.layout.prompts(group, paradigm_id, self.seq_len))
      tokens = generate(model, batch, max_new_tokens=max_new_tokens, rng=jax.random.key(0),
                        pad_id=self.tokenizer.pad_id)
      out.extend(np.asarray(jax.device_get(self._gather(tokens))))
    return out[:len(prompts)]

  def _max_new_tokens(self, task: Task) -> int:
    longest = max(len(e.target) for per in self.examples[task.name].values() for e in per)
    cap = self.settings.max_new_tokens
    size = _power_of_two(max(longest, _MIN_NEW_TOKENS))
    return min(size, cap) if cap else size

  def _outputs(self, params, task: Task, examples: list[Example]) -> list:
    """The model's output for each example, in the form `task.score` takes."""
    pid = self.paradigm_id(task)
    if task.kind == GENERATE:
      return self._generations(params, [e.prompt for e in examples], pid,
                               self._max_new_tokens(task))
    if task.kind == CHOICE:
      rows = [(e.prompt, c, None, pid) for e in examples for c in e.choices]
      scores = self._target_scores(params, rows)
      sizes = np.cumsum([0] + [len(e.choices) for e in examples])
      return [scores[a:b] for a, b in zip(sizes[:-1], sizes[1:])]
    return self._teacher_forced(params, task, examples)

  def _teacher_forced(self, params, task: Task, examples: list[Example]) -> list[TargetScores]:
    """The model's scores of each example's reference target, fed after its prompt."""
    pid = self.paradigm_id(task)
    return self._target_scores(params, [(e.prompt, e.target, e.scored, pid) for e in examples])

  def outputs(self, params, task: Task,
              examples: list[Example]) -> tuple[list, list[TargetScores] | None]:
    """What `task.score` takes for each example, and for GENERATE tasks the teacher-forced scores
    of the reference targets (None for the other kinds, which are teacher forced already)."""
    with jax.set_mesh(self.placed.mesh), axis_rules(self.placed.rules):
      outputs = self._outputs(params, task, examples)
      forced = self._teacher_forced(params, task, examples) if task.kind == GENERATE else None
    return outputs, forced

  def _scores(self, params, task: Task, examples: list[Example]) -> list[dict[str, float]]:
    """Each example's metrics: the task's own, then the teacher-forced ones (GENERATE tasks)."""
    outputs, forced = self.outputs(params, task, examples)
    scores = [task.score(e, o) for e, o in zip(examples, outputs)]
    for score, e, f in zip(scores, examples, forced or ()):
      score.update(scoring.teacher_forced(f.predictions, f.losses, e.target, e.scored))
    return scores

  def _run_task(self, params, task: Task) -> TaskResult:
    start = time.perf_counter()
    rows, sums = [], {}
    for difficulty, examples in self.examples[task.name].items():
      scores = self._scores(params, task, examples)
      means = {m: float(np.mean([s[m] for s in scores])) for m in scores[0]}
      for metric, value in means.items():
        sums[metric] = sums.get(metric, 0.0) + value
      rows.append({"difficulty": difficulty, "examples": len(examples),
                   "chance": task.chance(difficulty), **_summary(task, means)})
    overall = _summary(task, {m: v / len(rows) for m, v in sums.items()})
    return TaskResult(name=task.name, metrics=task.reported_metrics,
                      difficulty_label=task.difficulty_label,
                      higher_is_better=task.higher_is_better, rows=tuple(rows), overall=overall,
                      seconds=time.perf_counter() - start)

  def run(self, params, *, step: int,
          on_task: Callable[[TaskResult], None] | None = None) -> Report:
    """Scores `params` (the train state's params pytree) on every task; `on_task` gets each
    task's result as soon as it is done (`evaluate` writes it then, so a later task's failure
    loses nothing)."""
    results = {}
    for task in self.tasks:
      results[task.name] = self._run_task(params, task)
      if on_task is not None:
        on_task(results[task.name])
    return Report(step=int(step), layout=self.layout.kind, seq_len=self.seq_len,
                  examples=self.settings.examples, tasks=results)
