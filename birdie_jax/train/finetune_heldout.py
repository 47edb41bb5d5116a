"""What the fine-tuning protocol measures between steps: a task on its held-out selection split,
and perplexity on held-out prose.

Seed streams of `task.example_rng`: 0 the evaluation examples, 1 the training examples
(`Task.training_examples`), 2 (`SELECTION_STREAM`) the held-out split the protocol chooses its
learning rate on and draws its learning curves from: the LR is never chosen on the numbers it
reports. Each measurement runs the run's `Evaluator` on other examples (`scoped`: a shallow copy
sharing its compiled functions), plus the task's mean target loss per trained token in the
fine-tuning layout (`target_loss`), which moves before accuracy does.
"""
from __future__ import annotations

import copy

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.report import TaskResult
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import Example, Task, example_rng
from birdie_jax.models.forward import make_eval_step, mean_eval_loss

SELECTION_STREAM = 2  # beside task.py's 0 (evaluation) and 1 (training)
Examples = dict[int, list[Example]]  # difficulty -> examples
_EVAL_STEPS: dict[int, tuple[object, object]] = {}  # id(placed) -> (placed, jitted eval step)


def selection_examples(task: Task, seed: int, difficulty: int, count: int) -> list[Example]:
  """Held-out examples 0..count-1 of `difficulty` (stream 2)."""
  return [task.example(example_rng(seed, task.name, difficulty, i, stream=SELECTION_STREAM),
                       difficulty) for i in range(count)]


def scoped(evaluator: Evaluator, task: Task, examples: Examples) -> Evaluator:
  """`evaluator` running only `task` on `examples` (its compiled functions shared)."""
  out = copy.copy(evaluator)
  out.tasks = [task]
  out.examples = {task.name: examples}
  out.settings = ml_collections.ConfigDict(evaluator.settings.to_dict())
  out.settings.examples = max(len(e) for e in examples.values())
  return out


def task_result(evaluator: Evaluator, task: Task, params, examples: Examples) -> TaskResult:
  """`task` scored on `examples` with `params`."""
  return scoped(evaluator, task, examples).run(params, step=0).tasks[task.name]


def _eval_step(evaluator: Evaluator):
  placed = evaluator.placed
  if id(placed) not in _EVAL_STEPS:
    _EVAL_STEPS[id(placed)] = (placed, make_eval_step(placed))
  return _EVAL_STEPS[id(placed)][1]


def target_loss(evaluator: Evaluator, task: Task, params, examples: Examples) -> float:
  """Mean loss per trained target token of `examples`, laid out and packed as fine-tuning."""
  pid = evaluator.paradigm_id(task)
  segments = [evaluator.layout.segment(e.prompt, e.target, pid, e.scored)
              for per in examples.values() for e in per]
  rows = evaluator.layout.pack(segments, evaluator.seq_len)
  size = evaluator.settings.batch_size
  fill = -len(rows["inputs"]) % size  # empty rows (loss mask 0) keep one compiled shape
  rows = {k: np.concatenate([v, np.zeros((fill,) + v.shape[1:], v.dtype)]) for k, v in rows.items()}
  replicated = NamedSharding(evaluator.placed.mesh, PartitionSpec())
  batches = [{k: jax.device_put(v[i:i + size], replicated) for k, v in rows.items()}
             for i in range(0, len(rows["inputs"]), size)]
  with jax.set_mesh(evaluator.placed.mesh):
    return mean_eval_loss(_eval_step(evaluator), params, batches)


def heldout_scores(evaluator: Evaluator, task: Task, params,
                   examples: Examples) -> tuple[float, float]:
  """(main metric, target loss) of `task` on its held-out `examples`."""
  result = task_result(evaluator, task, params, examples)
  return result.overall[result.main_metric], target_loss(evaluator, task, params, examples)


def perplexity(evaluator: Evaluator, params, count: int, seed: int) -> float:
  """Perplexity on held-out prose (the `perplexity` task, `count` windows per length)."""
  task = task_registry.build_tasks(["perplexity"], evaluator.context)[0]
  examples = {d: task.examples(seed, d, count) for d in task.sweep}
  return task_result(evaluator, task, params, examples).overall["perplexity"]
