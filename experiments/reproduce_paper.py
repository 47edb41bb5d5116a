"""The paper's comparison at small scale: pre-train every arm, evaluate, fine-tune, evaluate again.

    python -m experiments.reproduce_paper --workdir=workdirs/paper [--budget_s=480] \
        [--arms=hawk_ntp,hawk_birdie] [--tiny] [--results=experiments/RESULTS.md]

Arms (one config each in `experiments/configs/`): Hawk with `ntp`, `ul2`, `fixed_ratio`,
`birdie_causal` and `birdie`; a Transformer with `ntp` and `birdie`. For each arm, in order:
  1. pre-train (`train_and_evaluate` into `<workdir>/<arm>`; checkpointed);
  2. evaluate the pre-trained checkpoint on every task (`<arm>/eval/<step>.json`);
  3. fine-tune on the phonebook as paper A.9 (scaled, `configs/common.py`) and evaluate again
     (`<arm>/finetune/eval/<step>.json`).
Each invocation works for at most `--budget_s` seconds: once they are spent, a pre-training stops
at its next step with a checkpoint, and no new stage starts (a stage starts only if the longest one
so far still fits). Run the same command again until it prints that every arm is done; it then
writes `--results` (tables, plots in `results/` beside it, the verdict, the commands and devices).
`--tiny` runs the CPU smoke scale of every config.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import sys
import time

from absl import app, flags, logging
import jax
import ml_collections

from birdie_jax.errors import ConfigError
from birdie_jax.evals.runner import Evaluator
from birdie_jax.models import param_count
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.train.metrics import log_progress
from birdie_jax.trained_run import load_run
from experiments import results
from experiments.budget import Budget
from experiments.configs import common
from experiments.phonebook_finetune import FINETUNE_DIR, finetune_and_evaluate, write_finetuned

ARMS = ("hawk_ntp", "hawk_ul2", "hawk_fixed_ratio", "hawk_birdie_causal", "hawk_birdie",
        "transformer_ntp", "transformer_birdie")
_ARM_FILE = "arm.json"


def arm_config(arm: str, arg: str | None) -> ml_collections.ConfigDict:
  """The training config of `arm` (`experiments/configs/<arm>.py`)."""
  return importlib.import_module(f"experiments.configs.{arm}").get_config(arg)


def _read_json(path: str, default):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return default


def _write_json(path: str, value) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def _latest_step(folder: str, config: ml_collections.ConfigDict) -> int:
  checkpointer = Checkpointer(os.path.join(folder, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep, async_save=False)
  try:
    return checkpointer.latest_step() or 0
  finally:
    checkpointer.close()


def _final_val_loss(folder: str) -> float:
  with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r["val_loss"] for r in rows if "val_loss" in r][-1]


class Reproduction:
  """One invocation's work over the arms, within a budget."""

  def __init__(self, workdir: str, arg: str | None, budget: Budget):
    self.workdir = workdir
    self.arg = arg
    self.budget = budget

  def _stage_fits(self) -> bool:
    """Whether the budget still holds the longest evaluation stage measured so far."""
    stages = [info.get("eval_s", 0.0) + info.get("finetune_s", 0.0)
              for info in (_read_json(os.path.join(self.workdir, arm, _ARM_FILE), {})
                           for arm in ARMS)]
    return not self.budget.spent and self.budget.left > max(stages)

  def pretrain(self, arm: str, config: ml_collections.ConfigDict) -> bool:
    """Trains `arm` on; True once it has reached `train.steps`."""
    folder = os.path.join(self.workdir, arm)
    if _latest_step(folder, config) >= config.train.steps:
      return True
    if self.budget.spent:
      return False
    path = os.path.join(folder, _ARM_FILE)
    start = time.perf_counter()
    train_and_evaluate(config, folder)
    info = _read_json(path, {})
    info["pretrain_s"] = info.get("pretrain_s", 0.0) + time.perf_counter() - start
    _write_json(path, info)
    return _latest_step(folder, config) >= config.train.steps

  def evaluate(self, arm: str, config: ml_collections.ConfigDict) -> bool:
    """Zero-shot and fine-tuned evaluation of the trained `arm`; True once both are written."""
    folder = os.path.join(self.workdir, arm)
    step = config.train.steps
    zero_path = os.path.join(folder, "eval", f"{step}.json")
    tuned_path = os.path.join(folder, FINETUNE_DIR, "eval", f"{step}.json")
    if os.path.exists(zero_path) and os.path.exists(tuned_path):
      return True
    if not self._stage_fits():
      return False
    path = os.path.join(folder, _ARM_FILE)
    info = _read_json(path, {})
    start = time.perf_counter()
    run = load_run(folder)
    evaluator = Evaluator(run.config, run.tokenizer, run.setup,
                          settings=common.eval_settings_for(self.arg))
    if not os.path.exists(zero_path):
      evaluator.run(run.params, step=run.step).write(os.path.dirname(zero_path))
      info["eval_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report, losses = finetune_and_evaluate(run, evaluator, common.finetune_settings(self.arg))
    write_finetuned(folder, report, losses)
    info["finetune_s"] = time.perf_counter() - start
    info.update(family=config.model.family, curriculum=config.curriculum,
                bidirectional=config.model.bidirectional,
                num_params=param_count(config.model, run.tokenizer.vocab_size),
                tokens=config.train.steps * config.train.batch_size * config.train.seq_len,
                val_loss=_final_val_loss(folder), device=jax.devices()[0].device_kind)
    _write_json(path, info)
    return True

  def run_arm(self, arm: str) -> bool:
    """Advances `arm` as far as the budget allows; True once it is complete."""
    config = arm_config(arm, self.arg)
    log_progress(f"== {arm}: {config.model.family}, curriculum {config.curriculum}")
    return self.pretrain(arm, config) and self.evaluate(arm, config)


def reproduce(workdir: str, *, arms: tuple[str, ...] = ARMS, arg: str | None = None,
              budget_s: float = 480.0, results_path: str = "experiments/RESULTS.md") -> bool:
  """Advances every arm within `budget_s`; writes `results_path` and returns True once all are
  complete."""
  unknown = [a for a in arms if a not in ARMS]
  if unknown:
    raise ConfigError(f"unknown arm {unknown[0]!r}; the arms are {', '.join(ARMS)}")
  os.makedirs(workdir, exist_ok=True)
  command = (f"python -m experiments.reproduce_paper --workdir={workdir} --arms={','.join(arms)} "
             f"--budget_s={budget_s:g} --results={results_path}" + (" --tiny" if arg else ""))
  with open(os.path.join(workdir, "invocations.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "command": command}) + "\n")
  with Budget(budget_s) as budget:
    work = Reproduction(workdir, arg, budget)
    done = [arm for arm in arms if work.run_arm(arm)]
    complete = len(done) == len(arms)
  if not complete:
    log_progress(f"stopping within the budget of {budget_s:.0f}s; done: "
                 f"{', '.join(done) or 'none'}; run the same command again to go on")
    return False
  results.write_results(workdir, arms, results_path,
                        common.finetune_settings(arg).to_dict())
  log_progress(f"every arm is done; wrote {results_path}")
  return True


def main(argv: list[str]) -> None:
  """Runs `reproduce` with the flags; user errors end in one line, exit 2."""
  del argv
  f = flags.FLAGS
  if not f["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    reproduce(f.workdir, arms=tuple(a.strip() for a in f.arms.split(",") if a.strip()),
              arg=common.ARG_TINY if f.tiny else None, budget_s=f.budget_s,
              results_path=f.results)
  except ConfigError as e:
    print(f"experiments.reproduce_paper: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", "workdirs/paper", "where every arm's run lives")
  flags.DEFINE_string("arms", ",".join(ARMS), "comma-separated arms to run, in order")
  flags.DEFINE_float("budget_s", 480.0, "seconds of work in this invocation")
  flags.DEFINE_bool("tiny", False, "run the CPU smoke scale of every config")
  flags.DEFINE_string("results", "experiments/RESULTS.md", "the results file to write at the end")
  app.run(main)
