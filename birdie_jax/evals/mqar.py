"""Multi-query associative recall (MQAR) with Zoology's generator parameters, in the run's tokens.

Zoology (`zoology/data/multiquery_ar.py`) builds a sequence of `input_seq_len` tokens over a
vocabulary of 8192: the context `k1 v1 k2 v2 ...` (keys without replacement from the lower half of
the vocabulary, values from the upper half), then a query region where key i reappears at position
`2 * gap_i` with its value after it; the gaps are distinct and drawn with probability proportional
to `power_a * g ** (power_a - 1)` (power_a 0.01: short gaps are likely); every other query-region
token is random filler. The model must predict each value at its key (teacher forced); the metric
is the accuracy over those positions.

Mapping to this codebase:
  vocabulary      the context's `alphabet` (the ids the held-out prose uses, most frequent first),
                  cut to Zoology's 8192; keys are its even entries, values its odd entries, so
                  the two halves are disjoint and alike in frequency.
  X / Y           X = the context, Y = the query region: a Birdie model reads the key-value pairs
                  in its bidirectional prefix and answers the queries causally. X + Y has exactly
                  Zoology's `input_seq_len` tokens.
  difficulty      the number of kv pairs, with `input_seq_len` from the test sets of Zoology's
                  original MQAR configs: (64, 4), (64, 8), (64, 16), (128, 32), (256, 64),
                  (512, 128), (1024, 256); those longer than the context are left out.
  filler          uniform over the vocabulary minus the example's keys (Zoology's
                  `random_non_queries` can draw a key as filler, its issue #29).
"""
from __future__ import annotations

import functools

import numpy as np

from birdie_jax.evals import scoring
from birdie_jax.evals.task import Example, FORWARD, Task, TargetScores

ZOOLOGY_TEST_SETS = ((64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256))
POWER_A = 0.01  # Zoology's default gap distribution
VOCAB_SIZE = 8192  # Zoology's vocabulary


def gap_probabilities(space: int, power_a: float = POWER_A) -> np.ndarray:
  """Zoology's query-gap distribution over 0..space-1: proportional to a * g^(a-1), g = 1..space."""
  p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
  return p / p.sum()


class MQAR(Task):
  """Recall the value of each queried key (Zoology's multi-query associative recall)."""

  name = "mqar"
  kind = FORWARD
  metrics = ("accuracy", "exact_match")
  difficulty_label = "key-value pairs"
  candidates = tuple(kv for _, kv in ZOOLOGY_TEST_SETS)

  @property
  def vocabulary(self) -> np.ndarray:
    """The alphabet cut to Zoology's vocabulary size."""
    return self.ctx.alphabet[:VOCAB_SIZE]

  @property
  def keys(self) -> np.ndarray:
    """Ids keys are drawn from."""
    return self.vocabulary[0::2]

  @property
  def values(self) -> np.ndarray:
    """Ids values are drawn from (disjoint from the keys)."""
    return self.vocabulary[1::2]

  @functools.cached_property
  def _sorted_vocabulary(self) -> np.ndarray:
    return np.unique(self.vocabulary)

  def filler(self, keys: np.ndarray) -> np.ndarray:
    """The vocabulary minus `keys` (a subset of it), sorted: `np.setdiff1d`'s result without its
    two sorts of 8k ids per example, which took 1.0 ms of an example's 1.4 ms (one CPU core,
    2026-12-07) and made MQAR fine-tuning batches slower to build than a GPU step."""
    vocabulary = self._sorted_vocabulary
    keep = np.ones(len(vocabulary), bool)
    keep[np.searchsorted(vocabulary, keys)] = False
    return vocabulary[keep]

  def fits(self, difficulty: int) -> bool:
    """The sequence fits the context and there are enough distinct keys and values."""
    length = dict((kv, n) for n, kv in ZOOLOGY_TEST_SETS)[difficulty]
    return length <= self.ctx.room and difficulty <= len(self.values)

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """X = k1 v1 ... kn vn; Y = the query region, values scored."""
    length = dict((kv, n) for n, kv in ZOOLOGY_TEST_SETS)[difficulty]
    keys = rng.choice(self.keys, difficulty, replace=False)
    values = rng.choice(self.values, difficulty, replace=False)
    context = np.stack([keys, values], axis=1).reshape(-1).astype(np.int32)
    queries_len = length - len(context)
    gaps = rng.choice(queries_len // 2, difficulty, replace=False,
                      p=gap_probabilities(queries_len // 2))
    queries = rng.choice(self.filler(keys), queries_len).astype(np.int32)
    queries[2 * gaps] = keys
    queries[2 * gaps + 1] = values
    scored = np.zeros(queries_len, bool)
    scored[2 * gaps + 1] = True
    return Example(prompt=context, target=queries, scored=scored)

  def score(self, example: Example, output: TargetScores) -> dict[str, float]:
    """Accuracy over the queried values and whether all of them are right."""
    args = (output.predictions, example.target, example.scored)
    return {"accuracy": scoring.token_accuracy(*args),
            "exact_match": scoring.token_exact_match(*args)}

  def chance(self, difficulty: int) -> float:
    """One over the number of possible values."""
    del difficulty
    return 1.0 / len(self.values)
