"""What every evaluation task is: a deterministic example generator over a difficulty sweep, and a
scorer of the model's outputs.

A task's examples are (prompt X, target Y) pairs of token ids in the run's tokenizer, each at most
`TaskContext.room` tokens together, so that laid out as in training (`layout.py`) they fit the
evaluation context. Example i of difficulty d comes from `example_rng(seed, task, d, i)`, so the
same seed gives the same examples on every host and at every evaluation. The same generator makes
fine-tuning data (`training_example`, from a disjoint stream of seeds).

How the model's output reaches `score` depends on the task's kind:
  GENERATE  the greedily decoded ids after the prompt (`decoding.generate`, recurrent state).
  FORWARD   `TargetScores` of the target: its per-token losses and the argmax prediction at each
            target position, teacher forced (one forward pass; exact match equals greedy's).
  CHOICE    one `TargetScores` per choice of `Example.choices`.
A GENERATE task is also scored teacher forced on its reference target, in the same layout, by the
runner (not the task): `TEACHER_FORCED` metrics beside the task's own (`Task.reported_metrics`).
Greedy exact match is all or nothing and hides a model that copies most tokens; the
teacher-forced token accuracy and the target's loss show how close it is.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
import dataclasses
import functools
import zlib

import numpy as np

from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.evals import resources

GENERATE, FORWARD, CHOICE = "generate", "forward", "choice"
LAYOUT_TOKENS = 2  # a prompt's paradigm token and the BEGIN token, beside X and Y
TEACHER_FORCED = ("tf_accuracy", "target_loss")  # GENERATE tasks' teacher-forced metrics
_TRAIN_STREAM = 1  # seeds training examples apart from evaluation examples (stream 0)


@dataclasses.dataclass(frozen=True)
class Example:
  """One evaluation (or fine-tuning) example."""

  prompt: np.ndarray  # int32 ids of the input X
  target: np.ndarray  # int32 ids of the reference answer Y (the fine-tuning target)
  scored: np.ndarray | None = None  # bool per target token: scored and trained on (None: all)
  answers: tuple[str, ...] = ()  # reference answer texts (text tasks)
  choices: tuple[np.ndarray, ...] = ()  # candidate targets of a multiple-choice example
  label: int = -1  # index of the right choice in `choices`


@dataclasses.dataclass(frozen=True)
class TargetScores:
  """The model on a target it was fed (teacher forcing), position by position."""

  losses: np.ndarray  # float cross-entropy of each target token
  predictions: np.ndarray  # int argmax id at each target position


class DoesNotFit(ValueError):
  """An example of this difficulty cannot fit the context."""


def _encoded_prose(tokenizer: Tokenizer) -> np.ndarray:
  return np.concatenate(tokenizer.encode_batch(resources.prose_passages()))


@dataclasses.dataclass(frozen=True, eq=False)
class TaskContext:
  """What the generators need to know about the run: its tokenizer and the context length."""

  tokenizer: Tokenizer
  seq_len: int  # laid-out examples fit in this many positions

  @property
  def room(self) -> int:
    """Tokens of prompt plus target that fit (the layout adds a paradigm and a BEGIN token)."""
    return self.seq_len - LAYOUT_TOKENS

  def encode(self, text: str) -> np.ndarray:
    """The tokenizer's int32 ids of `text`."""
    return np.asarray(self.tokenizer.encode(text), np.int32)

  @functools.cached_property
  def prose_ids(self) -> np.ndarray:
    """The held-out prose (`resources.prose_passages`), encoded as one stream."""
    return _encoded_prose(self.tokenizer)

  @functools.cached_property
  def separator(self) -> np.ndarray:
    """The ids of a newline, which ends the inputs of the token-level tasks."""
    return self.encode("\n")

  @functools.cached_property
  def alphabet(self) -> np.ndarray:
    """The token range of the synthetic tasks: every id the held-out prose uses, most frequent
    first (ties by id), without the separator's ids. Tokens a trained model has seen in text."""
    counts = np.bincount(self.prose_ids, minlength=self.tokenizer.vocab_size)
    counts[self.separator] = 0
    order = np.argsort(-counts, kind="stable")
    return order[counts[order] > 0].astype(np.int32)


def example_rng(seed: int, task: str, difficulty: int, index: int,
                stream: int = 0) -> np.random.Generator:
  """The generator of example `index` of `task` at `difficulty` (stream 1: fine-tuning data)."""
  return np.random.default_rng([seed, zlib.crc32(task.encode()), stream, difficulty, index])


class Task(abc.ABC):
  """A family of examples over a difficulty sweep, and how to score the model on them."""

  name: str = ""  # registry name
  kind: str = GENERATE  # GENERATE, FORWARD or CHOICE
  metrics: tuple[str, ...] = ()  # per-example metrics; the first is the main one (plotted)
  difficulty_label: str = ""  # what the difficulty counts (plot axis)
  candidates: tuple[int, ...] = ()  # the difficulty sweep before fitting it to the context
  higher_is_better: bool = True  # of the main metric
  paradigm: str = ""  # objective class whose paradigm token the prompts carry ('' : eval's choice)

  def __init__(self, ctx: TaskContext):
    self.ctx = ctx

  @functools.cached_property
  def sweep(self) -> tuple[int, ...]:
    """The difficulties whose examples fit the context (a subset of `candidates`)."""
    return tuple(d for d in self.candidates if self.fits(d))

  @abc.abstractmethod
  def fits(self, difficulty: int) -> bool:
    """Whether every example of `difficulty` fits `ctx.room`."""

  @abc.abstractmethod
  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """One example, drawn from `rng` alone."""

  @abc.abstractmethod
  def score(self, example: Example, output) -> dict[str, float]:
    """The example's `metrics` given the model's output (see the module docstring)."""

  @abc.abstractmethod
  def chance(self, difficulty: int) -> float:
    """The main metric's expected value for a uniform random guesser."""

  @property
  def reported_metrics(self) -> tuple[str, ...]:
    """The metrics the runner reports: `metrics`, then `TEACHER_FORCED` for GENERATE tasks."""
    return self.metrics + (TEACHER_FORCED if self.kind == GENERATE else ())

  def summarize(self, means: Mapping[str, float]) -> dict[str, float]:
    """Metrics derived from the means of the per-example metrics (default: the means)."""
    return dict(means)

  def examples(self, seed: int, difficulty: int, count: int) -> list[Example]:
    """Examples 0..count-1 of `difficulty` for `seed`."""
    return [self.example(example_rng(seed, self.name, difficulty, i), difficulty)
            for i in range(count)]

  def training_examples(self, seed: int, index: int, count: int,
                        difficulties: Sequence[int] | None = None) -> list[Example]:
    """Fine-tuning examples index..index+count-1: each of a difficulty drawn uniformly from
    `difficulties` (default: the sweep), from seeds disjoint from the evaluation examples'."""
    pool = tuple(difficulties or self.sweep)
    out = []
    for i in range(index, index + count):
      rng = example_rng(seed, self.name, 0, i, stream=_TRAIN_STREAM)
      out.append(self.example(rng, int(pool[rng.integers(len(pool))])))
    return out
