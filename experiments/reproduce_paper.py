"""The paper's comparison at small scale: pre-train every arm, evaluate, fine-tune, evaluate again.

    python -m experiments.reproduce_paper --workdir=workdirs/paper [--budget_s=480] \
        [--arms=hawk_ntp,hawk_birdie] [--parallel=7] [--tiny] [--results=experiments/RESULTS.md]

Arms (`experiments/configs/paper.py:<arm>`): Hawk with `ntp`, `ul2`, `fixed_ratio`,
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

`--parallel=N` runs up to N arms at once, each in its own process (`<workdir>/<arm>.log` holds its
output) with a 1/N share of the accelerator's memory: the arms are small, so one GPU runs several at
once in little more time than one. The results are the same as one at a time.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags
import jax
import ml_collections

from birdie_jax import cli
from birdie_jax.console import log_progress
from birdie_jax.errors import ConfigError
from birdie_jax.evals.runner import Evaluator
from birdie_jax.models import param_count
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.trained_run import load_run
from birdie_jax.workdir import FINETUNE_DIR, check_writable, write_atomic
from experiments import results
from experiments.budget import Budget
from experiments.configs import common
from experiments.configs import paper
from experiments.phonebook_finetune import finetune_and_evaluate, write_finetuned

ARMS = tuple(paper.ARMS)
_ARM_FILE = "arm.json"


def arm_config(arm: str, arg: str | None) -> ml_collections.ConfigDict:
  """The training config of `arm` (`experiments/configs/paper.py:<arm>`)."""
  return paper.arm_config(arm, arg)


def _read_json(path: str, default):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return default


def _write_json(path: str, value) -> None:
  write_atomic(path, json.dumps(value, indent=1))


def _latest_step(folder: str, config: ml_collections.ConfigDict) -> int:
  checkpointer = Checkpointer(os.path.join(folder, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep, async_save=False)
  try:
    return checkpointer.latest_step() or 0
  finally:
    checkpointer.close()


def _arm_complete(workdir: str, arm: str, arg: str | None) -> bool:
  """Whether `arm`'s zero-shot and fine-tuned evaluations are both written."""
  step = arm_config(arm, arg).train.steps
  folder = os.path.join(workdir, arm)
  return all(os.path.exists(os.path.join(folder, *stage, "eval", f"{step}.json"))
             for stage in ((), (FINETUNE_DIR,)))


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
    if _arm_complete(self.workdir, arm, self.arg):
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


def _record_invocation(workdir: str, date: str, command: str) -> None:
  with open(os.path.join(workdir, "invocations.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({"date": date, "device": jax.devices()[0].device_kind,
                        "jax": jax.__version__, "command": command}) + "\n")


def _run_in_processes(workdir: str, arms: tuple[str, ...], arg: str | None, budget_s: float,
                      parallel: int) -> None:
  """Runs each arm's `reproduce` in a child process, at most `parallel` at a time, within
  `budget_s` in all; a SIGTERM or Ctrl-C here reaches the children, which checkpoint and stop."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
  start = time.perf_counter()
  waiting, running = list(arms), {}
  previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    while waiting or running:
      while waiting and len(running) < parallel:
        arm = waiting.pop(0)
        left = budget_s - (time.perf_counter() - start)
        command = [sys.executable, "-m", "experiments.reproduce_paper",
                   f"--workdir={os.path.abspath(workdir)}",
                   f"--arms={arm}", f"--budget_s={max(left, 0.0):.0f}", "--results=",
                   "--parallel=1"] + (["--tiny"] if arg else [])
        with open(os.path.join(workdir, f"{arm}.log"), "a", encoding="utf-8") as log:
          running[arm] = subprocess.Popen(command, cwd=root, env=env, stdout=log,
                                          stderr=subprocess.STDOUT)
        log_progress(f"== {arm}: started in process {running[arm].pid} "
                     f"(output in {workdir}/{arm}.log)")
      time.sleep(0.5)
      for arm, process in list(running.items()):
        if process.poll() is not None:
          del running[arm]
          log_progress(f"== {arm}: process ended with exit code {process.returncode}")
  except KeyboardInterrupt:
    for process in running.values():
      process.terminate()
    for process in running.values():
      process.wait()
    raise
  finally:
    signal.signal(signal.SIGTERM, previous)


def check_arms(arms: tuple[str, ...], parallel: int) -> None:
  """ConfigError (one line) for an unknown arm or fewer than one process."""
  unknown = [a for a in arms if a not in ARMS]
  if unknown or not arms:
    raise ConfigError(f"unknown arm {(unknown or [''])[0]!r}; the arms are {', '.join(ARMS)}")
  if parallel < 1:
    raise ConfigError(f"--parallel must be at least 1, got {parallel}")


def reproduce(workdir: str, *, arms: tuple[str, ...] = ARMS, arg: str | None = None,
              budget_s: float = 480.0, results_path: str = "experiments/RESULTS.md",
              parallel: int = 1) -> bool:
  """Advances every arm within `budget_s` (up to `parallel` arms at once, each in its own process
  when `parallel` > 1); once all are complete, writes `results_path` (unless empty) and returns
  True."""
  check_arms(arms, parallel)
  os.makedirs(workdir, exist_ok=True)
  command = (f"python -m experiments.reproduce_paper --workdir={workdir} --arms={','.join(arms)} "
             f"--budget_s={budget_s:g} --results={results_path} --parallel={parallel}"
             + (" --tiny" if arg else ""))
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  if parallel > 1:
    _run_in_processes(workdir, arms, arg, budget_s, parallel)
    done = [arm for arm in arms if _arm_complete(workdir, arm, arg)]
    _record_invocation(workdir, date, command)  # only now: JAX here would take device memory
  else:
    _record_invocation(workdir, date, command)
    with Budget(budget_s) as budget:
      work = Reproduction(workdir, arg, budget)
      done = [arm for arm in arms if work.run_arm(arm)]
  if len(done) < len(arms):
    log_progress(f"stopping within the budget of {budget_s:.0f}s; done: "
                 f"{', '.join(done) or 'none'}; run the same command again to go on")
    return False
  if results_path:
    results.write_results(workdir, arms, results_path,
                          common.finetune_settings(arg).to_dict())
    log_progress(f"every arm is done; wrote {results_path}")
  return True


_PROGRAM = "experiments.reproduce_paper"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", "workdirs/paper", "where every arm's run lives")
  flags.DEFINE_string("arms", ",".join(ARMS), "comma-separated arms to run, in order")
  flags.DEFINE_float("budget_s", 480.0, "seconds of work in this invocation (> 0)")
  flags.DEFINE_bool("tiny", False, "run the CPU smoke scale of every config")
  flags.DEFINE_string("results", "experiments/RESULTS.md",
                      "the results file to write at the end ('': none)")
  flags.DEFINE_integer("parallel", 1, "arms run at once, each in its own process", lower_bound=1)


def check_flags(workdir: str, arms: tuple[str, ...], parallel: int, budget_s: float,
                results_path: str) -> None:
  """ConfigError (one line) for a bad arm, a budget that cannot run or a place that cannot be
  written, before the first arm starts (the results file is written only after the last)."""
  check_arms(arms, parallel)
  cli.require(budget_s > 0, f"--budget_s must be positive, got {budget_s:g}")
  check_writable(workdir)
  if results_path:
    cli.require(not os.path.isdir(results_path), f"--results={results_path} is a folder")
    check_writable(os.path.dirname(os.path.abspath(results_path)), hint="--results goes there")


def main(argv: list[str]) -> None:
  """Runs `reproduce` with the flags; user errors end in one line, exit 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  cli.quiet_logging()
  arms = tuple(a.strip() for a in f.arms.split(",") if a.strip())
  with cli.user_errors(_PROGRAM):
    check_flags(f.workdir, arms, f.parallel, f.budget_s, f.results)
    reproduce(f.workdir, arms=arms,
              arg=common.ARG_TINY if f.tiny else None, budget_s=f.budget_s,
              results_path=f.results, parallel=f.parallel)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
