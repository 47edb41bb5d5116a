"""The training loop's metrics of a data mixture (`data.sources`): tokens drawn and validation loss
per source.

    source_tokens/<name>     cumulative tokens drawn from the source (row positions holding an
                             example, padding and gaps left out; every process's rows), in every
                             logged row; they add up to all the tokens trained on so far, and
                             continue exactly across resumes (the counts are part of the
                             checkpointed data position, `data.mix_dataset`)
    source_val_loss/<name>   mean loss per target token on `train.eval_batches` fixed batches of
                             the source's own validation split, at each validation
    val_loss                 with sources: the weighted mean of the sources' losses (weight-0,
                             evaluation-only sources are left out of it)

The loop builds its validation batches with `validation_batches(...)` and its validation action
with `validation_loss(...)` (a `ValidationLoss` for one source, exactly as before; a
`SourceValidationLoss` for a mixture), and adds `source_tokens(...)` to its logged rows when
`data.sources` is set. A run of one `data.source` logs neither.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from birdie_jax.data.mix_dataset import source_tokens as state_tokens
from birdie_jax.data.source_mixture import MixtureDocuments
from birdie_jax.models.forward import mean_eval_loss
from birdie_jax.train.actions import Scalars
from birdie_jax.train.actions import ValidationLoss
from birdie_jax.train.nonfinite import NonFiniteGuard


def source_tokens(data_iter) -> Scalars:
  """{'source_tokens/<name>': tokens drawn so far} over every process's rows, from the data
  iterator's state (the position after the batch `next` returned last); {} for one source.
  Collective with several processes: every process calls it at the same steps."""
  counts = state_tokens(data_iter.get_state())
  if not counts:
    return {}
  names = sorted(counts)
  values = np.array([counts[name] for name in names], np.int64)
  if jax.process_count() > 1:
    values = np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)
  return {f"source_tokens/{name}": float(value) for name, value in zip(names, values)}


class SourceValidationLoss(ValidationLoss):
  """`ValidationLoss` per source: `source_val_loss/<name>` on each source's fixed batches, and
  `val_loss` their mean weighted by the mixture's weights."""

  def __init__(self, eval_step: Callable, sets: Mapping[str, Sequence[Mapping[str, Any]]],
               weights: Mapping[str, float], *, every: int, total: int, guard: NonFiniteGuard):
    super().__init__(eval_step, [b for batches in sets.values() for b in batches], every=every,
                     total=total, guard=guard)
    self.sets, self.weights = dict(sets), dict(weights)

  def run(self, step: int, state: Any) -> Scalars:
    """{'val_loss': weighted mean, 'source_val_loss/<name>': each source's mean loss}."""
    del step
    losses = {name: mean_eval_loss(self.eval_step, state.params, batches)
              for name, batches in self.sets.items()}
    trained = {name: w for name, w in self.weights.items() if w > 0}
    mean = math.fsum(w * losses[name] for name, w in trained.items()) / math.fsum(trained.values())
    return {"val_loss": mean, **{f"source_val_loss/{name}": loss for name, loss in losses.items()}}

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    """'step 100 validation by source: books 3.214, wiki 2.950'."""
    return f"step {step} validation by source: " + ", ".join(
        f"{name} {scalars[f'source_val_loss/{name}']:.3f}" for name in self.sets)


def validation_batches(val_docs, batches_of: Callable[[Any], list]) -> list | dict[str, list]:
  """`batches_of(val_docs)`, this process's fixed validation batches on the mesh; for a mixture
  (`MixtureDocuments`) {name: `batches_of(part)`} of each source's validation split."""
  if isinstance(val_docs, MixtureDocuments):
    return {name: batches_of(part) for name, part in val_docs.parts.items()}
  return batches_of(val_docs)


def validation_loss(eval_step: Callable, batches: list | dict[str, list], val_docs, *, every: int,
                    total: int, guard: NonFiniteGuard) -> ValidationLoss:
  """The run's validation action on `validation_batches(val_docs, ...)`: `ValidationLoss`, or
  for a mixture a `SourceValidationLoss` weighted by its weights."""
  if isinstance(val_docs, MixtureDocuments):
    return SourceValidationLoss(eval_step, batches, val_docs.weights, every=every, total=total,
                                guard=guard)
  return ValidationLoss(eval_step, batches, every=every, total=total, guard=guard)
