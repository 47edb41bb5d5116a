"""PNG plots of a task's main metric against difficulty, one line per run (or per checkpoint)."""
from __future__ import annotations

from collections.abc import Mapping
import os
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from birdie_jax.workdir import save_figure

if TYPE_CHECKING:
  from birdie_jax.evals.report import TaskResult


def plot_task(series: Mapping[str, TaskResult], path: str | os.PathLike, *,
              title: str = "") -> None:
  """Writes a plot of the main metric against difficulty for each labelled result of one task
  (log-scaled difficulties when they span a factor of 8 or more), with the chance level dashed."""
  first = next(iter(series.values()))
  metric = first.main_metric
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for label, result in series.items():
    x = [row["difficulty"] for row in result.rows]
    ax.plot(x, [row[metric] for row in result.rows], marker="o", label=label)
  x = [row["difficulty"] for row in first.rows]
  ax.plot(x, [row["chance"] for row in first.rows], linestyle="--", color="gray", label="chance")
  if x and max(x) >= 8 * min(x) > 0:
    ax.set_xscale("log", base=2)
  if first.higher_is_better:
    ax.set_ylim(0.0, 1.02)
  else:
    ax.set_yscale("log")
  ax.set(xlabel=first.difficulty_label, ylabel=metric.replace("_", " "),
         title=title or first.name.replace("_", " "))
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  save_figure(fig, path)
  plt.close(fig)
