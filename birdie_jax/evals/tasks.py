"""The registry of evaluation tasks: name -> Task class (see `task.py` for what a task is)."""
from __future__ import annotations

from collections.abc import Sequence

from birdie_jax.errors import ConfigError
from birdie_jax.evals.mqar import MQAR
from birdie_jax.evals.natural_copying import CopyingText
from birdie_jax.evals.passage_qa import PassageQA
from birdie_jax.evals.perplexity import Perplexity
from birdie_jax.evals.phonebook import Phonebook
from birdie_jax.evals.story_infilling import StoryInfilling
from birdie_jax.evals.synthetic import Copying, CopyingFrequent, Induction, SelectiveCopying
from birdie_jax.evals.task import Task, TaskContext

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    Phonebook, MQAR, Copying, CopyingFrequent, CopyingText, SelectiveCopying, Induction, PassageQA,
    StoryInfilling, Perplexity)}
NAMES = tuple(TASKS)


def parse_names(text: str) -> tuple[str, ...]:
  """'phonebook, mqar' -> ('phonebook', 'mqar'); ConfigError for unknown, repeated or no names."""
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    raise ConfigError(f"unknown eval task {unknown[0]!r}; the tasks are {', '.join(NAMES)}")
  if len(set(names)) != len(names):
    raise ConfigError(f"eval tasks {text!r} name a task twice")
  if not names:
    raise ConfigError(f"eval tasks {text!r} name no task; the tasks are {', '.join(NAMES)}")
  return names


def build_tasks(names: Sequence[str], ctx: TaskContext) -> list[Task]:
  """The named tasks for `ctx`; ConfigError if one has no difficulty that fits the context."""
  tasks = [TASKS[name](ctx) for name in names]
  for task in tasks:
    if not task.sweep:
      raise ConfigError(f"eval task {task.name}: no difficulty fits a context of {ctx.seq_len} "
                        f"tokens (its sweep: {task.candidates}); raise eval.seq_len")
  return tasks
