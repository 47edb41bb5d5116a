"""The fine-tuning curriculum: what each stage of a task's fine-tune draws its examples from.

Every task but the phonebook has one stage: its own sweep for all steps. The phonebook's
difficulty is the number of phone numbers asked (1-32) while its book fills the whole context
(hundreds of entries at 2k tokens), so a model that cannot yet retrieve from 10 entries sees no
signal from 700. Its first `fraction` of the steps therefore draw small books: a Phonebook task
whose context is cut to hold about `entries` entries (10-50 by default, `small_books`), asking at
most a fifth of them; the rest of the steps draw full-context books from the task's sweep. Small
book sizes whose context would not be smaller than the evaluation's are left out (at short
contexts the curriculum is a single stage).
"""
from __future__ import annotations

from collections.abc import Sequence

from birdie_jax.evals.phonebook import Phonebook, answer_text, prompt_text
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import LAYOUT_TOKENS, Task, TaskContext
from birdie_jax.train.finetune import Choice, Stage

_LONG_NAME = "Christopher Richardson"  # sizes the asked entries' questions generously
_ENTRY = "Mary Smith: 669-174-4914\n"  # a typical book line
_NUMBER = "669-174-4914"


def book_context(ctx: TaskContext, entries: int, numbers: int) -> int:
  """The context length whose phonebook examples asking `numbers` hold about `entries` lines."""
  fixed = (len(ctx.encode(prompt_text([], [_LONG_NAME] * numbers)))
           + len(ctx.encode(answer_text([_NUMBER] * numbers))))
  return LAYOUT_TOKENS + fixed + entries * len(ctx.encode(_ENTRY))


def small_book_choices(evaluator: Evaluator, pool: Sequence[int],
                       entries: Sequence[int]) -> list[Choice]:
  """(Phonebook at a cut context, (numbers,)) for each small book size and each number of the
  pool up to a fifth of its entries (at least 1), where the cut context is shorter than the
  evaluation's."""
  ctx = evaluator.context
  choices = []
  for size in entries:
    for numbers in pool:
      length = book_context(ctx, size, numbers)
      if numbers <= max(1, size // 5) and length < evaluator.seq_len:
        choices.append((Phonebook(TaskContext(ctx.tokenizer, length)), (numbers,)))
  return choices


def training_stages(evaluator: Evaluator, task: Task, steps: int, fraction: float,
                    small_books: Sequence[int]) -> list[Stage]:
  """The (steps, choices) stages of `task`'s fine-tune (see the module docstring)."""
  full: Stage = (steps, [(task, task.sweep)])
  if task.name != Phonebook.name:
    return [full]
  small = small_book_choices(evaluator, task.sweep, small_books)
  first = int(round(steps * fraction))
  if not small or first == 0:
    return [full]
  stages: list[Stage] = [(first, small), (steps - first, [(task, task.sweep)])]
  return [s for s in stages if s[0] > 0]
