"""Objective competence results on disk: `objectives/<step>.json`, `<step>.md` and a plot of each
class's validation loss against the training step, read from the run's `metrics.jsonl`.

What the run logged there (`train/loop.py`): Birdie's controlled curricula log each configuration's
validation loss as `val_loss/<configuration>` at every controller evaluation; a class's curve is
the mean over its configurations, as `mixture.png`'s lower panel (`controller.reward.class_means`)
but over the whole run rather than the controller's history window. Other curricula log only the
mixture's `val_loss`, plotted as one curve (for ntp it is the next-token class). The competence
result at its checkpoint step is marked on each curve.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from birdie_jax.workdir import as_path, save_figure, write_atomic

MIXTURE = "mixture"  # the curve of a run that logged only `val_loss`


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
  """`metrics.jsonl` as {step: scalars}, rows of one step merged, later rows winning (a resumed
  run logs steps after its checkpoint again; the last row of a step counts)."""
  path = as_path(os.path.join(workdir, "metrics.jsonl"))
  if not path.exists():
    return {}
  out: dict[int, dict[str, float]] = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    if line.strip():
      row = json.loads(line)
      out.setdefault(int(row.pop("step")), {}).update(row)
  return dict(sorted(out.items()))


def class_loss_history(metrics: dict[int, dict[str, float]], classes: Sequence[str],
                       configurations: dict[str, str]) -> dict[str, tuple[list[int], list[float]]]:
  """{curve: (steps, losses)}: per class the mean of its configurations' `val_loss/<name>` at each
  step that logged all of them; without such keys, the mixture's `val_loss` as one curve."""
  keys = {c: [f"val_loss/{n}" for n, cls in configurations.items() if cls == c] for c in classes}
  curves = {}
  for cls, names in keys.items():
    steps = [s for s, row in metrics.items() if names and all(k in row for k in names)]
    if steps:
      curves[cls] = (steps, [float(np.mean([metrics[s][k] for k in names])) for s in steps])
  if not curves:
    steps = [s for s, row in metrics.items() if "val_loss" in row]
    label = classes[0] if len(classes) == 1 else MIXTURE
    curves = {label: (steps, [metrics[s]["val_loss"] for s in steps])} if steps else {}
  return curves


def markdown(result: dict) -> str:
  """A table of loss and token accuracy per objective class."""
  lines = [f"## Objective competence at step {result['step']}", "",
           f"Curriculum {result['curriculum']}; held-out rows in the training layout: "
           f"{result['batches']} batch(es) of {result['rows']} rows per configuration "
           f"(seed {result['seed']}). Class values are means over its configurations.", "",
           "| objective class | configurations | target tokens | loss | token accuracy |",
           "|---|---|---|---|---|"]
  for name, c in result["classes"].items():
    lines.append(f"| {name} | {c['configurations']} | {int(c['tokens'])} | {c['loss']:.3f} | "
                 f"{c['accuracy']:.3f} |")
  return "\n".join(lines) + "\n"


def plot_history(curves: dict[str, tuple[list[int], list[float]]], result: dict,
                 path: str | os.PathLike) -> None:
  """Validation loss per class against the training step, with the competence losses marked."""
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for name, (steps, losses) in curves.items():
    line, = ax.plot(steps, losses, marker=".", label=name)
    if name in result["classes"]:
      ax.plot([result["step"]], [result["classes"][name]["loss"]], marker="*", markersize=11,
              linestyle="none", color=line.get_color())
  ax.set(xlabel="training step", ylabel="validation loss (class mean)",
         title=f"Held-out loss per objective class ({result['curriculum']}; ★ competence)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", ncol=2)
  fig.tight_layout()
  save_figure(fig, path)
  plt.close(fig)


def write(result: dict, workdir: str) -> str:
  """Writes `objectives/<step>.json`, `.md` and `-losses.png` into `workdir`; returns the folder."""
  folder = os.path.join(workdir, "objectives")
  base = os.path.join(folder, str(result["step"]))
  write_atomic(base + ".json", json.dumps(result, indent=1))
  write_atomic(base + ".md", markdown(result))
  configurations = {n: c["class"] for n, c in result["configurations"].items()}
  curves = class_loss_history(read_metrics(workdir), tuple(result["classes"]), configurations)
  plot_history(curves, result, base + "-losses.png")
  return folder
