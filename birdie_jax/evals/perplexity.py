"""Perplexity on held-out prose, by window length.

Each example is a window of `difficulty` consecutive tokens of the held-out prose stream (a random
offset), scored as a next-token target after an empty prompt: for a Birdie curriculum the prompt
is the next-token paradigm token, as its next-token objective trains. Metrics: the mean loss per
token (nats) and its exponential, the perplexity (a uniform guess scores the vocabulary size).
"""
from __future__ import annotations

from collections.abc import Mapping
import math

import numpy as np

from birdie_jax.evals.task import Example, FORWARD, Task, TargetScores

LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)


class Perplexity(Task):
  """Next-token loss and perplexity on windows of held-out prose."""

  name = "perplexity"
  kind = FORWARD
  metrics = ("perplexity", "loss")
  difficulty_label = "window (tokens)"
  candidates = LENGTHS
  higher_is_better = False
  paradigm = "next_token_prediction"

  def fits(self, difficulty: int) -> bool:
    """The window fits the context and the prose is longer than it."""
    return difficulty <= self.ctx.room and difficulty < len(self.ctx.prose_ids)

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """An empty prompt and a random window of the prose as the target."""
    start = int(rng.integers(len(self.ctx.prose_ids) - difficulty + 1))
    window = self.ctx.prose_ids[start:start + difficulty].copy()
    return Example(prompt=np.zeros(0, np.int32), target=window)

  def score(self, example: Example, output: TargetScores) -> dict[str, float]:
    """The mean loss per token (perplexity is derived from the mean in `summarize`)."""
    del example
    return {"loss": float(np.mean(output.losses))}

  def summarize(self, means: Mapping[str, float]) -> dict[str, float]:
    """exp(mean loss) (every window of one length has the same number of tokens)."""
    return {"perplexity": math.exp(means["loss"]), "loss": means["loss"]}

  def chance(self, difficulty: int) -> float:
    """A uniform guess over the vocabulary has perplexity equal to its size."""
    del difficulty
    return float(self.ctx.tokenizer.vocab_size)
