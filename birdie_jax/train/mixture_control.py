"""Birdie's controller inside the training loop (curricula `birdie` and `birdie_causal`).

At each scheduled evaluation: the per-configuration validation losses on fixed validation sets
(laid out as in training) go to the controller's jitted `update`, whose new mixture the data
pipeline uses from the next batch on; the losses, rewards and mixture are logged and
`mixture.png` is redrawn. The controller state travels in every checkpoint, and it is the
mixture's one checkpointed copy: the data state is saved without the weights, and a restore sets
them from the controller state (`data_weights`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import grain
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from birdie_jax.controller.controller import Controller
from birdie_jax.controller.plot import plot_mixture
from birdie_jax.controller.state import ControllerState
from birdie_jax.controller.state import mixture_weights
from birdie_jax.data.pipeline import make_validation_sets, set_mixture_weights
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.models.forward import mean_eval_loss
from birdie_jax.objectives.mixture import Mixture


class MixtureControl:
  """Owns the controller, its validation sets and state for one run."""

  def __init__(self, config: ml_collections.ConfigDict, mixture: Mixture):
    self.mixture = mixture
    self.config = config
    self.controller = Controller.from_config(
        config.controller, class_of_config=mixture.curriculum.class_index,
        total_steps=config.train.steps)
    self.state: ControllerState = self.controller.init()
    self._val_sets: dict[str, list[dict]] = {}

  def build_validation_sets(self, documents: Sequence[str], tokenizer: Tokenizer,
                            to_global: Callable[[dict], dict], batch_shards: int) -> None:
    """A fixed validation batch per configuration from this process's held-out documents:
    `controller.val_rows` rows, rounded up to a multiple of `batch_shards`."""
    rows = -(-self.config.controller.val_rows // batch_shards) * batch_shards
    sets = make_validation_sets(
        documents, tokenizer, self.mixture, seq_len=self.config.train.seq_len,
        batch_size=rows // jax.process_count(), num_batches=1, seed=self.config.seed + 1,
        gap=self.config.data.gap)
    self._val_sets = {name: [to_global(b) for b in batches] for name, batches in sets.items()}

  def abstract_state(self) -> ControllerState:
    """Shapes and dtypes of the controller state, the restore target."""
    return jax.eval_shape(self.controller.init)

  def is_eval_step(self, step: int) -> bool:
    """Whether the controller evaluates after train step `step`."""
    return self.controller.schedule.is_eval_step(step)

  def validation_losses(self, eval_step, params) -> np.ndarray:
    """Mean target-token loss of every configuration, in `mixture.names` order."""
    return np.asarray([mean_eval_loss(eval_step, params, self._val_sets[name])
                       for name in self.mixture.names])

  def update(self, step: int, eval_step, params, data_iterator: grain.DatasetIterator,
             workdir: str) -> dict[str, float]:
    """Evaluates, updates the controller, hands the new mixture to the data pipeline; returns the
    scalars to log."""
    start = time.perf_counter()
    losses = self.validation_losses(eval_step, params)
    eval_s = time.perf_counter() - start
    compile_s = self.controller.compile(self.state)
    start = time.perf_counter()
    state = self.controller.update(self.state, losses, step)
    if jax.process_count() > 1:  # one decision for every host, bit for bit
      state = multihost_utils.broadcast_one_to_all(jax.device_get(state))
    self.state = jax.device_get(state)
    update_s = time.perf_counter() - start
    set_mixture_weights(data_iterator, self.controller.mixture_weights(self.state))
    curriculum = self.mixture.curriculum
    scalars = self.controller.metrics(self.state, curriculum.names, curriculum.classes)
    scalars["controller/eval_s"] = eval_s
    scalars["controller/update_s"] = update_s
    scalars["controller/compile_s"] = compile_s
    if jax.process_index() == 0:
      plot_mixture(self.state, curriculum.class_index, curriculum.classes,
                   os.path.join(workdir, "mixture.png"))
    return scalars


def data_weights(state: ControllerState) -> np.ndarray | None:
  """The weights the data pipeline samples from under `state`: its mixture once the controller
  has updated (`MixtureControl.update` hands over every new one), None before the first update
  (the pipeline then keeps the curriculum's starting weights)."""
  if int(jax.device_get(state.num_updates)) == 0:
    return None
  return mixture_weights(state)
