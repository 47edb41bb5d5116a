"""Birdie's multi-number phonebook (paper §4.3, Fig. 9), with books sized to the context.

Prompt (the question comes before and after the book):
    What are the phone numbers for A, B, and C? Find them in the phonebook below.
    Phonebook:
    First Last: 669-174-4914
    ...
    What are the phone numbers for A, B, and C? Find them in the phonebook above.
Target: the numbers asked for, in the order asked, `669-174-4914, 712-...` and a newline. The
difficulty is how many numbers are asked for (1-32, as in Fig. 1); the book holds as many entries as
fit the context after the questions and the answer (the paper: 750-800 entries in 16k tokens).
Names are distinct within a book, drawn from the US Census lists in `names/`; numbers are 10 digits,
the first 6-9 (as Jelassi et al.'s generator). Scores: digit accuracy (a random guess gets 10%)
and exact match of the whole answer line.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools

import numpy as np

from birdie_jax.evals import resources
from birdie_jax.evals import scoring
from birdie_jax.evals.task import DoesNotFit, Example, GENERATE, Task

NUMBERS = (1, 2, 4, 8, 16, 32)  # numbers asked for (the paper's Fig. 1 range)
DIGIT_CHANCE = 0.1  # a uniformly random digit is right one time in ten
_MAX_DRAWS = 100  # draws of the asked names before an example is declared too long


def phone_number(rng: np.random.Generator) -> str:
  """'669-174-4914': ten digits, the first 6-9."""
  d = [int(rng.integers(6, 10))] + rng.integers(0, 10, 9).tolist()
  s = "".join(map(str, d))
  return f"{s[:3]}-{s[3:6]}-{s[6:]}"


def _name_list(names: Sequence[str]) -> str:
  if len(names) == 1:
    return names[0]
  if len(names) == 2:
    return f"{names[0]} and {names[1]}"
  return f"{', '.join(names[:-1])}, and {names[-1]}"


def question(names: Sequence[str], where: str) -> str:
  """The question line for `names`, pointing 'below' or 'above' the book."""
  if len(names) == 1:
    return f"What is the phone number for {names[0]}? Find it in the phonebook {where}."
  return f"What are the phone numbers for {_name_list(names)}? Find them in the phonebook {where}."


def prompt_text(book: Sequence[tuple[str, str]], asked: Sequence[str]) -> str:
  """The question, the book ('Name: number' lines), the question again."""
  lines = "".join(f"{name}: {number}\n" for name, number in book)
  return f"{question(asked, 'below')}\nPhonebook:\n{lines}{question(asked, 'above')}\n"


def answer_text(numbers: Sequence[str]) -> str:
  """The target: the numbers in the order asked, comma-separated, then a newline."""
  return ", ".join(numbers) + "\n"


class Phonebook(Task):
  """Retrieve 1-32 phone numbers from a book that fills the context."""

  name = "phonebook"
  kind = GENERATE
  metrics = ("digit_accuracy", "exact_match")
  difficulty_label = "phone numbers retrieved"
  candidates = NUMBERS

  @functools.cached_property
  def _name_tokens(self) -> int:
    """A long full name's tokens: the 90th percentiles of first and last names' token counts."""
    first = [len(self.ctx.encode(n)) for n in resources.first_names()]
    last = [len(self.ctx.encode(" " + n)) for n in resources.last_names()]
    return int(np.percentile(first, 90) + np.percentile(last, 90))

  def _fixed_tokens(self, names: Sequence[str], numbers: Sequence[str]) -> int:
    """Tokens of the questions, the asked entries and the answer (the book's smallest size)."""
    book = "".join(f"{n}: {p}\n" for n, p in zip(names, numbers))
    return (len(self.ctx.encode(prompt_text([], names))) + len(self.ctx.encode(book))
            + len(self.ctx.encode(answer_text(numbers))))

  def fits(self, difficulty: int) -> bool:
    """Whether the questions, answer and asked entries fit with long names (90th percentile)."""
    short = "A B"
    extra = max(0, self._name_tokens - len(self.ctx.encode(short)))
    fixed = self._fixed_tokens([short] * difficulty, ["669-174-4914"] * difficulty)
    return fixed + 3 * difficulty * extra <= self.ctx.room

  def _names(self, rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct full names."""
    first, last = resources.first_names(), resources.last_names()
    names: dict[str, None] = {}
    while len(names) < count:
      names[f"{first[rng.integers(len(first))]} {last[rng.integers(len(last))]}"] = None
    return list(names)

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """A book filling the context, `difficulty` of its entries asked for in a random order."""
    for _ in range(_MAX_DRAWS):  # redraw the rare long-named sets that do not fit
      asked_names = self._names(rng, difficulty)
      asked_numbers = [phone_number(rng) for _ in asked_names]
      budget = self.ctx.room - self._fixed_tokens(asked_names, asked_numbers)
      if budget >= 0:
        break
    else:
      raise DoesNotFit(f"{difficulty} numbers do not fit {self.ctx.seq_len} tokens")
    target = self.ctx.encode(answer_text(asked_numbers))
    book = list(zip(asked_names, asked_numbers))
    taken = set(asked_names)
    while True:  # extra entries while their (separately encoded) lengths fit the budget
      name = self._names(rng, 1)[0]
      if name in taken:
        continue
      entry = (name, phone_number(rng))
      cost = len(self.ctx.encode(f"{entry[0]}: {entry[1]}\n"))
      if cost > budget:
        break
      book.append(entry)
      taken.add(name)
      budget -= cost
    order = rng.permutation(len(book))
    book = [book[i] for i in order]
    prompt = self.ctx.encode(prompt_text(book, asked_names))
    while len(prompt) + len(target) > self.ctx.room:  # merges across lines can shift the count
      extra = [i for i, (name, _) in enumerate(book) if name not in asked_names]
      if not extra:
        raise DoesNotFit(f"{difficulty} numbers do not fit {self.ctx.seq_len} tokens")
      del book[extra[-1]]
      prompt = self.ctx.encode(prompt_text(book, asked_names))
    return Example(prompt=prompt, target=target, answers=tuple(asked_numbers))

  def score(self, example: Example, output: np.ndarray) -> dict[str, float]:
    """Digit accuracy and exact match of the first line of the decoded output."""
    line = scoring.first_line(self.ctx.tokenizer.decode(output))
    return {"digit_accuracy": scoring.digit_accuracy(line, example.answers),
            "exact_match": scoring.exact_match(line, ", ".join(example.answers))}

  def chance(self, difficulty: int) -> float:
    """10%: each digit of a random number is right one time in ten."""
    del difficulty
    return DIGIT_CHANCE
