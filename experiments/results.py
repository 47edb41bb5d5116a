"""`RESULTS.md` for `reproduce_paper`: tables, plots and a verdict read from the arms' eval files.

Every number comes from the files the run wrote (`<arm>/eval/<step>.json` zero-shot,
`<arm>/finetune/eval/<step>.json` after fine-tuning, `<arm>/arm.json`, `invocations.jsonl`); the
verdict compares Birdie arms with their next-token baselines on the retrieval tasks and calls a
difference real only beyond two standard errors.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import math
import os
from typing import Any

from birdie_jax.evals import plots
from birdie_jax.evals.report import Report, read_report
from birdie_jax.workdir import FINETUNE_DIR

RETRIEVAL = ("phonebook", "mqar", "copying", "selective_copying", "induction", "passage_qa")
COMPARISONS = (("hawk_birdie", "hawk_ntp"), ("hawk_birdie_causal", "hawk_ntp"),
               ("transformer_birdie", "transformer_ntp"))
PAPER = """The paper's numbers (1.4B parameters, 32B Pile tokens; from the PDF in samblouir/birdie):
- Multi-phonebook digit accuracy after A.9 fine-tuning (Fig. 1, read off the plot): Hawk-Birdie
  about 100% retrieving 1 number and 79% retrieving 32; Hawk-NTP about 17% and 11% (random: 10%);
  Transformers about 100% either way.
- SQuAD v2 answer-contains (instruction-tuned, Table 3): Hawk-Birdie 55.8, Hawk-Birdie-Causal 27.2,
  Hawk-NTP 16.6, Transformer-Birdie 76.1, Transformer-NTP 63.6.
- Story infilling (instruction-tuned, Table 4): Hawk-Birdie 42.5, Hawk-NTP 33.1 (chance 25)."""


@dataclasses.dataclass(frozen=True)
class ArmResults:
  """What one arm's workdir holds."""

  name: str
  info: dict[str, Any]  # arm.json: model, curriculum, parameters, tokens, times, val loss
  zero_shot: Report
  finetuned: Report


def latest_report(folder: str) -> Report:
  """The report of the highest step in `folder` (`<step>.json` files)."""
  steps = sorted(int(name[:-len(".json")]) for name in os.listdir(folder)
                 if name.endswith(".json") and name[:-len(".json")].isdigit())
  return read_report(os.path.join(folder, f"{steps[-1]}.json"))


def load_arm(workdir: str, arm: str) -> ArmResults:
  """Reads one finished arm."""
  folder = os.path.join(workdir, arm)
  with open(os.path.join(folder, "arm.json"), encoding="utf-8") as f:
    info = json.load(f)
  return ArmResults(arm, info, latest_report(os.path.join(folder, "eval")),
                    latest_report(os.path.join(folder, FINETUNE_DIR, "eval")))


def _mean(report: Report, task: str) -> tuple[float, int]:
  """The main metric's mean over the sweep, and the number of examples behind it."""
  result = report.tasks[task]
  return result.overall[result.main_metric], sum(int(r["examples"]) for r in result.rows)


def compare(a: Report, b: Report, task: str) -> tuple[float, float, bool]:
  """(a's mean, b's mean, whether a beats b by more than two standard errors), the standard error
  taken as for the mean of n Bernoulli trials per arm."""
  (pa, na), (pb, nb) = _mean(a, task), _mean(b, task)
  se = math.sqrt(max(pa * (1 - pa), 0.0) / na + max(pb * (1 - pb), 0.0) / nb)
  return pa, pb, pa - pb > 2 * se


def verdict(arms: dict[str, ArmResults]) -> list[str]:
  """Plain statements of how Birdie arms fare against their baselines on retrieval."""
  lines = []
  for birdie, baseline in COMPARISONS:
    if birdie not in arms or baseline not in arms:
      continue
    for stage in ("finetuned", "zero_shot"):
      a, b = getattr(arms[birdie], stage), getattr(arms[baseline], stage)
      tasks = [t for t in RETRIEVAL if t in a.tasks and t in b.tasks]
      results = {t: compare(a, b, t) for t in tasks}
      wins = [t for t, (_, _, beats) in results.items() if beats]
      detail = "; ".join(f"{t} {pa:.3f} vs {pb:.3f}" for t, (pa, pb, _) in results.items())
      when = "after phonebook fine-tuning" if stage == "finetuned" else "zero-shot"
      lines.append(f"- **{birdie} beats {baseline} on {len(wins)} of {len(tasks)} retrieval tasks "
                   f"{when}** ({', '.join(wins) or 'none'}). Means over each sweep: {detail}.")
    if "phonebook" in arms[birdie].finetuned.tasks:
      _, _, beats = compare(arms[birdie].finetuned, arms[baseline].finetuned, "phonebook")
      if not beats:
        lines.append(f"- **{birdie} does not beat {baseline} on phonebook retrieval at this "
                     "scale** (after fine-tuning, beyond two standard errors).")
  return lines


def _cell(value: float) -> str:
  return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def task_section(task: str, arms: dict[str, ArmResults], plot_dir: str, link_dir: str) -> list[str]:
  """A table (zero-shot and fine-tuned means, fine-tuned values per difficulty) and plots."""
  first = next(iter(arms.values())).finetuned.tasks[task]
  metric = first.main_metric
  difficulties = [r["difficulty"] for r in first.rows]
  chance = ", ".join(f"{_cell(r['chance'])}" for r in first.rows)
  lines = [f"### {task}: {metric.replace('_', ' ')}", "",
           f"Difficulty: {first.difficulty_label}; chance per difficulty: {chance}.", "",
           "| arm | zero-shot mean | fine-tuned mean | " +
           " | ".join(f"{d:g}" for d in difficulties) + " |",
           "|---" * (3 + len(difficulties)) + "|"]
  for name, arm in arms.items():
    zero, tuned = arm.zero_shot.tasks[task], arm.finetuned.tasks[task]
    cells = [name, _cell(zero.overall[metric]), _cell(tuned.overall[metric])]
    cells += [_cell(r[metric]) for r in tuned.rows]
    lines.append("| " + " | ".join(cells) + " |")
  for stage, label in (("zero_shot", "zero-shot"), ("finetuned", "fine-tuned")):
    path = os.path.join(plot_dir, f"{task}-{stage}.png")
    plots.plot_task({n: getattr(a, stage).tasks[task] for n, a in arms.items()}, path,
                    title=f"{task.replace('_', ' ')} ({label})")
  lines += ["", f"![{task} zero-shot]({link_dir}/{task}-zero_shot.png) "
                f"![{task} fine-tuned]({link_dir}/{task}-finetuned.png)", ""]
  return lines


def _invocations(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "invocations.jsonl")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _shared_device(command: str) -> bool:
  """Whether an invocation ran several arms at once (`--parallel` above 1)."""
  return any(part.startswith("--parallel=") and part != "--parallel=1"
             for part in command.split())


def write_results(workdir: str, arms: Sequence[str], path: str,
                  finetune: dict[str, Any]) -> None:
  """Writes `path` (markdown) and its plots into `<dir of path>/results/`."""
  loaded = {arm: load_arm(workdir, arm) for arm in arms}
  plot_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "results")
  os.makedirs(plot_dir, exist_ok=True)
  calls = _invocations(workdir)
  devices = sorted({c["device"] for c in calls})
  sample = next(iter(loaded.values())).finetuned
  lines = ["# Birdie vs next-token prediction at small scale", "",
           f"Generated {calls[-1]['date']} from the files in `{workdir}`, written by "
           f"{len(calls)} invocation(s) of `experiments/reproduce_paper.py` on "
           f"{', '.join(devices)}. Nothing here is typed in by hand.", "",
           "## Verdict", "", *verdict(loaded), "",
           "## Arms", "",
           "| arm | family | curriculum | bidirectional | parameters | tokens | pre-training s | "
           "fine-tuning s | evaluation s | final val loss |", "|---" * 10 + "|"]
  for name, arm in loaded.items():
    i = arm.info
    lines.append(f"| {name} | {i['family']} | {i['curriculum']} | {i['bidirectional']} | "
                 f"{i['num_params']:,} | {i['tokens']:,} | {i['pretrain_s']:.0f} | "
                 f"{i['finetune_s']:.0f} | {i['eval_s']:.0f} | {i['val_loss']:.3f} |")
  lines += ["", "Fine-tuning (paper A.9 scaled, every arm alike): "
            + ", ".join(f"{k} {v}" for k, v in finetune.items()) + ".",
            f"Evaluation: {sample.examples} examples per difficulty, context {sample.seq_len} "
            "tokens, greedy decoding with the models' recurrent state / KV cache, prompts in each "
            "arm's training layout. Validation loss is each arm's own objective mixture, so it is "
            "comparable only between arms of the same curriculum."
            + (" Times are wall-clock seconds of arms that shared the device (`--parallel`)."
               if any(_shared_device(c["command"]) for c in calls) else ""), "",
            "## Results per task", ""]
  link_dir = "results"
  for task in sample.tasks:
    lines += task_section(task, loaded, plot_dir, link_dir)
  lines += ["## What was run", "", "```"]
  lines += [f"{c['date']}  {c['device']}  {c['command']}" for c in calls]
  lines += ["```", "", "## Reference", "", PAPER, ""]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
