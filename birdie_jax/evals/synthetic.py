"""Copying, selective copying and induction heads, in the run's token space.

All three draw their tokens from the context's `alphabet` (the ids the held-out prose uses, most
frequent first), so a language model trained on text sees familiar ids. X ends with the newline
separator where the task needs its end marked; Y is what the model must produce. In the prefix
layout, copying prompts carry the copying objective's paradigm token (that objective trains this
very format); the other two use the evaluation's default (`eval.paradigm`), since Birdie's
selective-copying objective has another format (queries and markers).

  copying            Jelassi et al.'s copy task: X = a random string of n tokens (uniform over the
                     alphabet) + separator, Y = the string; scored on the greedy copy (token
                     accuracy and exact match). Difficulty: n.
  copying_frequent   The same over the alphabet's 256 most frequent ids only: strings of tokens a
                     model has seen often, apart from the rare ids that dominate the full alphabet
                     of a subword tokenizer (chance 1/256 per token). Natural-text copying is
                     `natural_copying.py`.
  selective_copying  The Mamba paper's task (s4's generator with `variable=True`): 16 tokens to
                     memorise (from a vocabulary of 14 data tokens; 16 with noise and marker) at
                     random positions of an L-token sequence of noise tokens; X = the sequence +
                     separator, Y = the 16 tokens in order (the separator takes the place of the
                     16 marker tokens). Teacher-forced accuracy. Difficulty: L.
  induction          safari's induction-head task: a random sequence over 16 tokens with a trigger
                     token somewhere followed by one token; X = the sequence + the trigger,
                     Y = the token that followed the trigger. Teacher-forced accuracy.
                     Difficulty: the length of X.
"""
from __future__ import annotations

import numpy as np

from birdie_jax.evals import scoring
from birdie_jax.evals.task import Example, FORWARD, GENERATE, Task, TargetScores

COPY_LENGTHS = (16, 32, 64, 128, 256, 512)
FREQUENT_TOKENS = 256  # copying_frequent's alphabet: the most frequent ids of the held-out prose
SELECTIVE_LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)  # the Mamba paper's setting is 4096
TOKENS_TO_COPY = 16  # Mamba: 16 tokens to memorise
SELECTIVE_DATA_TOKENS = 14  # Mamba's vocabulary of 16 minus the noise and marker tokens
INDUCTION_LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)
INDUCTION_VOCAB = 16  # the Mamba paper's induction-head vocabulary


def _token_scores(example: Example, predicted: np.ndarray) -> dict[str, float]:
  return {"accuracy": scoring.token_accuracy(predicted, example.target, example.scored),
          "exact_match": scoring.token_exact_match(predicted, example.target, example.scored)}


class Copying(Task):
  """Copy a random string of n tokens (greedy decoding)."""

  name = "copying"
  kind = GENERATE
  metrics = ("accuracy", "exact_match")
  difficulty_label = "tokens copied"
  candidates = COPY_LENGTHS
  paradigm = "copying"
  vocabulary: int | None = None  # the alphabet's most frequent ids drawn from (None: all)

  @property
  def tokens(self) -> np.ndarray:
    """The ids the strings are drawn from, uniformly."""
    return self.ctx.alphabet[:self.vocabulary]

  def fits(self, difficulty: int) -> bool:
    """The string twice and the separator fit."""
    return 2 * difficulty + len(self.ctx.separator) <= self.ctx.room

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """X = string + separator, Y = string."""
    string = rng.choice(self.tokens, difficulty).astype(np.int32)
    return Example(prompt=np.concatenate([string, self.ctx.separator]), target=string)

  def score(self, example: Example, output: np.ndarray) -> dict[str, float]:
    """Token accuracy and exact match of the first n generated tokens."""
    return _token_scores(example, output)

  def chance(self, difficulty: int) -> float:
    """One over the number of ids drawn from, per token."""
    del difficulty
    return 1.0 / len(self.tokens)


class CopyingFrequent(Copying):
  """Copy a random string of n tokens among the 256 most frequent (greedy decoding)."""

  name = "copying_frequent"
  vocabulary = FREQUENT_TOKENS


class SelectiveCopying(Task):
  """Copy, in order, the 16 non-noise tokens of a noisy sequence."""

  name = "selective_copying"
  kind = FORWARD
  metrics = ("accuracy", "exact_match")
  difficulty_label = "sequence length (tokens)"
  candidates = SELECTIVE_LENGTHS

  def fits(self, difficulty: int) -> bool:
    """The sequence, the separator and the copied tokens fit."""
    return (difficulty + len(self.ctx.separator) + TOKENS_TO_COPY <= self.ctx.room
            and len(self.ctx.alphabet) > SELECTIVE_DATA_TOKENS)

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """X = noise with the tokens at random places + separator, Y = the tokens in order."""
    noise, data = self.ctx.alphabet[0], self.ctx.alphabet[1:1 + SELECTIVE_DATA_TOKENS]
    places = np.sort(rng.choice(difficulty, TOKENS_TO_COPY, replace=False))
    tokens = rng.choice(data, TOKENS_TO_COPY).astype(np.int32)
    sequence = np.full(difficulty, noise, np.int32)
    sequence[places] = tokens
    return Example(prompt=np.concatenate([sequence, self.ctx.separator]), target=tokens)

  def score(self, example: Example, output: TargetScores) -> dict[str, float]:
    """Teacher-forced token accuracy and exact match."""
    return _token_scores(example, output.predictions)

  def chance(self, difficulty: int) -> float:
    """One over the number of data tokens."""
    del difficulty
    return 1.0 / SELECTIVE_DATA_TOKENS


class Induction(Task):
  """After the trigger token, produce the token that followed its earlier occurrence."""

  name = "induction"
  kind = FORWARD
  metrics = ("accuracy",)
  difficulty_label = "sequence length (tokens)"
  candidates = INDUCTION_LENGTHS

  def fits(self, difficulty: int) -> bool:
    """The sequence and the answer fit."""
    return difficulty + 1 <= self.ctx.room and len(self.ctx.alphabet) > INDUCTION_VOCAB

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """X = random tokens with `trigger t` inside, ending with the trigger; Y = t."""
    data, trigger = self.ctx.alphabet[:INDUCTION_VOCAB], self.ctx.alphabet[INDUCTION_VOCAB]
    sequence = rng.choice(data, difficulty).astype(np.int32)
    place = int(rng.integers(0, difficulty - 2))
    sequence[place] = trigger
    sequence[-1] = trigger
    return Example(prompt=sequence, target=sequence[place + 1:place + 2].copy())

  def score(self, example: Example, output: TargetScores) -> dict[str, float]:
    """Whether the teacher-forced prediction is the token after the first trigger."""
    return {"accuracy": scoring.token_accuracy(output.predictions, example.target)}

  def chance(self, difficulty: int) -> float:
    """One over the vocabulary of the sequence."""
    del difficulty
    return 1.0 / INDUCTION_VOCAB
