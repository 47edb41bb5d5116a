"""Natural-text copying (Jelassi et al. 2024, "Repeat After Me"): copy a passage of held-out prose.

  copying_text  X = n consecutive tokens of the held-out prose (`TaskContext.prose_ids`, Milton,
                which the default runs never train on) cut at a random offset + the newline
                separator, Y = the same n tokens. Scored on the greedy copy (token accuracy and
                exact match, as `copying`) and, like every generation task, teacher forced on Y
                (`tf_accuracy`, `target_loss`). Difficulty: n, 16 to 1024 tokens (those whose
                passage twice and the separator fit the context).

How the prompt reaches the model depends on the run's layout (`layout.py`, `Evaluator.paradigm_id`):
  prefix        Birdie arms: [copying paradigm] + passage + separator, then BEGIN, then the copy:
                the format the copying objective trains.
  continuation  next-token arms: a plain continuation, "repeat after me". The prompt is
                passage + separator and the expected continuation is the passage again; nothing
                but the repetition itself tells the model to copy, as in Jelassi et al.'s
                pre-trained-model experiments.

Random strings (`copying`, `copying_frequent`) test copying apart from language knowledge; prose
is what a language model copies in use, and a model that cannot copy still predicts some of it.
So the chance level is not 1/|alphabet| but the unigram guesser's: a guesser that draws each token
from the prose's token frequencies p_i is right with probability sum_i p_i^2. (A model's own
teacher-forced accuracy on prose it does not copy, the `perplexity` task's text, is the stronger
baseline; compare `tf_accuracy` with it.)
"""
from __future__ import annotations

import functools

import numpy as np

from birdie_jax.evals.synthetic import Copying
from birdie_jax.evals.task import Example

TEXT_COPY_LENGTHS = (16, 32, 64, 128, 256, 512, 1024)


class CopyingText(Copying):
  """Copy a passage of n tokens of held-out prose (greedy decoding)."""

  name = "copying_text"
  difficulty_label = "prose tokens copied"
  candidates = TEXT_COPY_LENGTHS

  def fits(self, difficulty: int) -> bool:
    """The passage twice and the separator fit, and the prose is long enough."""
    return super().fits(difficulty) and difficulty <= len(self.ctx.prose_ids)

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """X = prose_ids[s:s + n] + separator, Y = prose_ids[s:s + n], s uniform."""
    start = int(rng.integers(len(self.ctx.prose_ids) - difficulty + 1))
    passage = self.ctx.prose_ids[start:start + difficulty].astype(np.int32)
    return Example(prompt=np.concatenate([passage, self.ctx.separator]), target=passage)

  @functools.cached_property
  def unigram_chance(self) -> float:
    """sum_i p_i^2 over the prose's token frequencies p_i."""
    p = np.bincount(self.ctx.prose_ids) / len(self.ctx.prose_ids)
    return float(np.sum(p * p))

  def chance(self, difficulty: int) -> float:
    """The unigram guesser's expected token accuracy (see the module docstring)."""
    del difficulty
    return self.unigram_chance
