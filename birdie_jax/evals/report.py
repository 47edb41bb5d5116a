"""Evaluation results: per task and difficulty, as flat scalars, JSON, a markdown table and plots.

`Report.write(directory)` writes `<step>.json`, `<step>.md` and `<step>-<task>.png` (the main
metric against difficulty, with the chance level). `evaluate` writes each task's
`<step>-<task>.json` and `.png` as soon as the task is done (`write_task`), then the summary.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import os
from typing import Any

from birdie_jax.evals import plots
from birdie_jax.workdir import as_path, write_atomic


@dataclasses.dataclass(frozen=True)
class TaskResult:
  """One task's results over its difficulty sweep."""

  name: str
  metrics: tuple[str, ...]  # the first is the main metric
  difficulty_label: str
  higher_is_better: bool
  rows: tuple[dict[str, float], ...]  # per difficulty: difficulty, examples, chance, metrics
  overall: dict[str, float]  # the metrics averaged over the sweep
  seconds: float  # wall time of the task's evaluation

  @property
  def main_metric(self) -> str:
    """The metric that is plotted and compared."""
    return self.metrics[0]

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> TaskResult:
    """Inverse of `dataclasses.asdict`."""
    return cls(name=data["name"], metrics=tuple(data["metrics"]),
               difficulty_label=data["difficulty_label"],
               higher_is_better=data["higher_is_better"], rows=tuple(data["rows"]),
               overall=dict(data["overall"]), seconds=data["seconds"])


@dataclasses.dataclass(frozen=True)
class Report:
  """All tasks of one evaluation."""

  step: int
  layout: str  # 'prefix' or 'continuation'
  seq_len: int  # the context the examples fit
  examples: int  # per difficulty
  tasks: dict[str, TaskResult]

  @property
  def scalars(self) -> dict[str, float]:
    """`eval/<task>/<metric>`: each metric averaged over the task's difficulty sweep."""
    return {f"eval/{name}/{metric}": value
            for name, result in self.tasks.items() for metric, value in result.overall.items()}

  def to_json(self) -> dict[str, Any]:
    """A JSON-able dict (`from_json` reads it back)."""
    return {"step": self.step, "layout": self.layout, "seq_len": self.seq_len,
            "examples": self.examples,
            "tasks": {name: dataclasses.asdict(r) for name, r in self.tasks.items()}}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Report:
    """Reads a report written by `to_json`."""
    return cls(step=data["step"], layout=data["layout"], seq_len=data["seq_len"],
               examples=data["examples"],
               tasks={n: TaskResult.from_json(r) for n, r in data["tasks"].items()})

  def markdown(self) -> str:
    """A summary table (each metric's mean over the sweep) and one table per task."""
    lines = [f"## Evaluation at step {self.step}", "",
             f"{self.examples} examples per difficulty, {self.layout} layout, context "
             f"{self.seq_len} tokens.", "",
             "| task | metric | mean over difficulties | difficulties |", "|---|---|---|---|"]
    for result in self.tasks.values():
      sweep = ", ".join(_number(row["difficulty"]) for row in result.rows)
      for metric in result.metrics:
        lines.append(f"| {result.name} | {metric} | {_number(result.overall[metric])} | {sweep} |")
    for result in self.tasks.values():
      lines += ["", f"### {result.name}", "",
                f"| {result.difficulty_label} | " + " | ".join(result.metrics) + " | chance |",
                "|---" * (len(result.metrics) + 2) + "|"]
      for row in result.rows:
        cells = [_number(row["difficulty"])] + [_number(row[m]) for m in result.metrics]
        lines.append("| " + " | ".join(cells + [_number(row["chance"])]) + " |")
    return "\n".join(lines) + "\n"

  def write(self, directory: str) -> None:
    """Writes `<step>.json`, `<step>.md` and a `<step>-<task>.png` per task into `directory`."""
    self.write_summary(directory)
    for result in self.tasks.values():
      plots.plot_task({f"step {self.step}": result},
                      _task_base(directory, self.step, result) + ".png")

  def write_summary(self, directory: str) -> None:
    """Writes `<step>.json` and `<step>.md` into `directory` (each atomically)."""
    base = os.path.join(os.fspath(directory), str(self.step))
    write_atomic(base + ".json", json.dumps(self.to_json(), indent=1))
    write_atomic(base + ".md", self.markdown())


def _task_base(directory: str, step: int, result: TaskResult) -> str:
  return os.path.join(os.fspath(directory), f"{step}-{result.name}")


def write_task(directory: str, step: int, result: TaskResult) -> None:
  """Writes one task's `<step>-<task>.json` (atomically) and `.png` into `directory`, as soon as
  the task is done: the summary `<step>.json` comes only after the last task."""
  base = _task_base(directory, step, result)
  write_atomic(base + ".json", json.dumps(dataclasses.asdict(result), indent=1))
  plots.plot_task({f"step {step}": result}, base + ".png")


def read_task(path: str) -> TaskResult:
  """The task result stored at `path` (a `<step>-<task>.json` of `write_task`)."""
  return TaskResult.from_json(json.loads(as_path(path).read_text(encoding="utf-8")))


def read_report(path: str) -> Report:
  """The report stored at `path` (a `<step>.json`)."""
  return Report.from_json(json.loads(as_path(path).read_text(encoding="utf-8")))


def _number(value: float) -> str:
  if float(value).is_integer() and abs(value) >= 1:
    return str(int(value))
  return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"
