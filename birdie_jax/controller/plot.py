"""`mixture.png`: the controller's class weights and per-class validation losses over training."""
from __future__ import annotations

from collections.abc import Sequence
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from birdie_jax.controller.reward import class_means
from birdie_jax.controller.state import ControllerState
from birdie_jax.workdir import save_figure


def mixture_history(state: ControllerState, class_of_config: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(evaluation steps, class weights, per-class mean losses): each history row, then the latest
  evaluation with the mixture chosen there. Arrays of T, (T, C) and (T, C)."""
  s = jax.device_get(state)
  count = int(s.count)
  if int(s.num_updates) == 0:
    return np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros((0, 0))
  steps = np.append(s.steps[:count], s.prev_step)
  actions = np.concatenate([s.actions[:count], s.action[None]])
  losses = np.concatenate([s.losses[:count], s.prev_losses[None]])
  weights = np.stack([np.bincount(class_of_config, a) for a in actions])
  return steps, weights, np.asarray(class_means(losses, class_of_config))


def plot_mixture(state: ControllerState, class_of_config: np.ndarray,
                 class_names: Sequence[str], path: str | os.PathLike) -> None:
  """Writes a two-panel PNG: class weights (each held until the next evaluation) and per-class
  mean validation loss, against the training step, over the evaluations the history holds (all of
  them unless `controller.history` made older rows slide out)."""
  steps, weights, losses = mixture_history(state, np.asarray(class_of_config))
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
  for c, name in enumerate(class_names):
    if steps.size:
      line, = top.step(steps, weights[:, c], where="post", label=name)
      bottom.plot(steps, losses[:, c], marker=".", color=line.get_color(), label=name)
  top.set(ylabel="class weight", title="Objective mixture chosen by the controller", ylim=(0, 1.02))
  bottom.set(xlabel="training step", ylabel="validation loss (class mean)")
  top.legend(fontsize="small", ncol=2, loc="upper right")
  for ax in (top, bottom):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  save_figure(fig, path)
  plt.close(fig)
