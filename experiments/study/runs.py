"""The numbers of the study's runs, read from their workdirs only (`results.py` judges them).

One workdir per arm, `<root>/<arm>` (STATUS.md's commands write these files):
  eval/<step>.json            `python -m birdie_jax.evaluate` (evals/report.py's Report): the
                              copying tasks' and the zero-shot stand-ins' (story infilling,
                              passage QA) main metric over the sweep, `copying_text`'s exact
                              match at 16 tokens (the sanity gate's copy check)
  finetune/protocol*.json     `experiments.study.finetune` (finetune_protocol.ProtocolResult, one
                              file per task or all in one): per task, the chosen LR's steps to
                              50% / 90% held-out accuracy (not reached: the run's length, so a
                              never-learning arm counts as slow, not as missing), its final
                              held-out score, and the evaluation's one-number phonebook digit
                              accuracy (the gate's retrieval check)
  objectives/<step>.json      `evaluate --tasks=objectives`: each class's token accuracy
  heldout.json                `experiments.study.heldout`: {corpus file: {loss, perplexity}}
  metrics.jsonl               the training loop's; the last `val_loss`
An arm's metrics are {name: value}; a file that is missing leaves its metrics out.
`run_facts` reads what the RESULTS file states beside them: the card(s) of each start
(run.json's `starts`), the training tokens (config.json) and the pre-training throughput.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
import glob
import json
import os
import re
import statistics

from birdie_jax.chips import gpu_peak_tflops
from birdie_jax.workdir import FINETUNE_DIR

COPY_TASKS = ("copying_text", "copying", "copying_frequent")
ZERO_SHOT_TASKS = ("story_infilling", "passage_qa")  # Birdie's story and SQuAD stand-ins
RETRIEVAL_TASKS = ("phonebook", "mqar")
GATE_COPY = "gate/copy_text_16"  # copying_text exact match at 16 tokens
GATE_PHONEBOOK = "gate/phonebook_1"  # phonebook digit accuracy asking one number, fine-tuned
_SEED = re.compile(r"-s(\d+)$")


def _read(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _latest(folder: str) -> str | None:
  """The highest `<step>.json` of `folder`, or None."""
  steps = [int(os.path.basename(p)[:-5]) for p in glob.glob(os.path.join(folder, "*.json"))
           if os.path.basename(p)[:-5].isdigit()]
  return os.path.join(folder, f"{max(steps)}.json") if steps else None


def _row(task: Mapping, difficulty: int, metric: str) -> float | None:
  return next((r[metric] for r in task["rows"] if r["difficulty"] == difficulty), None)


def eval_metrics(report: Mapping) -> dict[str, float]:
  """Copying tasks' and zero-shot stand-ins' main metrics, the gate's 16-token copy exact match."""
  tasks, out = report["tasks"], {}
  for name in COPY_TASKS + ZERO_SHOT_TASKS:
    if name in tasks:
      out[name] = tasks[name]["overall"][tasks[name]["metrics"][0]]
  if "copying_text" in tasks and _row(tasks["copying_text"], 16, "exact_match") is not None:
    out[GATE_COPY] = _row(tasks["copying_text"], 16, "exact_match")
  return out


def protocol_metrics(protocol: Mapping) -> dict[str, float]:
  """Per fine-tuned task: steps to 50% / 90% (the run's steps if never), final held-out score,
  held-out perplexity after; the one-number phonebook digit accuracy."""
  out = {}
  for name, task in protocol["tasks"].items():
    chosen = task["chosen"]
    for key in ("steps_to_50", "steps_to_90"):
      out[f"{name}/{key}"] = chosen[key] if chosen[key] is not None else chosen["steps"]
    out[f"{name}/final"] = chosen["final_score"]
    out[f"{name}/perplexity_after"] = chosen["perplexity_after"]
    if name == "phonebook":
      value = _row(task["evaluation"], 1, "digit_accuracy")
      if value is not None:
        out[GATE_PHONEBOOK] = value
  return out


def _rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def arm_metrics(workdir: str) -> dict[str, float]:
  """Every metric the files of one arm's workdir give (see the module docstring)."""
  out: dict[str, float] = {}
  report = _latest(os.path.join(workdir, "eval"))
  if report:
    out.update(eval_metrics(_read(report)))
  for path in sorted(glob.glob(os.path.join(workdir, FINETUNE_DIR, "protocol*.json"))):
    out.update(protocol_metrics(_read(path)))
  objectives = _latest(os.path.join(workdir, "objectives"))
  if objectives:  # competence at the run's own objectives: token accuracy per class
    out.update({f"objectives/{name}": c["accuracy"]
                for name, c in _read(objectives)["classes"].items()})
  heldout = os.path.join(workdir, "heldout.json")
  if os.path.exists(heldout):
    out.update({f"perplexity/{name}": v["perplexity"] for name, v in _read(heldout).items()})
  losses = [row["val_loss"] for row in _rows(os.path.join(workdir, "metrics.jsonl"))
            if "val_loss" in row]
  if losses:
    out["val_loss"] = losses[-1]
  return out


def run_facts(workdir: str) -> dict | None:
  """An arm's run: cards (the device kinds its starts ran on), steps, rows, length, tokens
  (config.json) and the median tokens/s and MFU over its logged training windows (the first
  window of each start holds the compile and is left out; MFU: the loop's 6 x params FLOPs per
  token against the card's dense bf16 peak, None for a card without one). None before a start."""
  record = os.path.join(workdir, "run.json")
  config_path = os.path.join(workdir, "config.json")
  if not (os.path.exists(record) and os.path.exists(config_path)):
    return None
  starts = _read(record).get("starts", [])
  train = _read(config_path)["train"]
  first_windows = {s["step"] + 1 for s in starts}
  windows = [r for r in _rows(os.path.join(workdir, "metrics.jsonl"))
             if "tokens_per_s" in r and r["step"] not in first_windows]
  cards = sorted({s["device_kind"] for s in starts})
  rate = statistics.median(r["tokens_per_s"] for r in windows) if windows else None
  peak = gpu_peak_tflops(cards[0]) if len(cards) == 1 else None
  tflops = (statistics.median(r["tflops_per_s_per_device"] for r in windows)
            if windows and peak else None)
  return {"cards": cards, "steps": train["steps"], "rows": train["batch_size"],
          "length": train["seq_len"],
          "tokens": train["steps"] * train["batch_size"] * train["seq_len"],
          "tokens_per_s": rate, "mfu": tflops / peak if tflops else None}


def group_of(arm: str) -> str:
  """The arm without its seed: 'hawk-50m-birdie-s1' -> 'hawk-50m-birdie'."""
  return _SEED.sub("", arm)


def collect(root: str, arms: Iterable[str]) -> dict[str, dict[str, list[float]]]:
  """{group: {metric: [one value per seed that has it]}} over the arms whose workdir exists."""
  out: dict[str, dict[str, list[float]]] = {}
  for arm in arms:
    workdir = os.path.join(root, arm)
    if os.path.isdir(workdir):
      for key, value in arm_metrics(workdir).items():
        out.setdefault(group_of(arm), {}).setdefault(key, []).append(float(value))
  return out
