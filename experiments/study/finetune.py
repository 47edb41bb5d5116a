"""The fine-tuning protocol on a study run, one task per call (`finetune/protocol-<task>.json`).

    python -m experiments.study.finetune --workdir=workdirs/study/hawk-50m-birdie-s0 \\
        --task=phonebook [--tiny]

`birdie_jax.train.finetune_protocol` (`protocol_for_run`: per task an LR sweep of warm-up + cosine
fine-tunes with 50% replay of the run's own pre-training rows, the LR chosen on a held-out split,
learning curves, perplexity before and after) with the study's settings, SETTINGS below: the same
for every arm of a size so steps-to-50% / 90% compare. One task per call keeps each call inside a
GPU command's 10 minutes; `runs.py` merges the files. A call stopped mid-sweep resumes from
`<workdir>/finetune/checkpoints/<task>/` (finished LRs and the running one's newest curve point;
`gpu_call.sh` packs no `checkpoints` folder). The evaluator is the run's `eval` section
(config.py: 32 examples per difficulty at 2048 tokens).
"""
from __future__ import annotations

import os

from absl import app, flags

from birdie_jax import cli
from birdie_jax.evals.runner import Evaluator
from birdie_jax.train import finetune_progress
from birdie_jax.train.finetune_protocol import FinetuneSettings, protocol_for_run
from birdie_jax.trained_run import TrainedRun, load_run
from birdie_jax.workdir import FINETUNE_DIR, check_writable

# 1,000 steps x 32 rows (16 replayed) at 2048 tokens: 16,000 task rows per LR (phonebook books of
# up to 32 asked numbers, MQAR rows of many queries: more examples than rows), the sweep at 1%, 3%
# and 10% of the run's peak in the protocol's half-decade steps. Below the protocol's 1e5 default
# to bound device time: the three LRs of one task took 11 minutes for transformer-50m (H200,
# 2026-12-07, before batches were made ahead of the device), resumed across calls.
# `extra_learning_rates`: the rule fixed in STATUS.md before any protocol result: while a task's
# best LR is the sweep's largest, try the next half-decade up (30%, then 100% of the peak).
# `prune_at` (successive halving, fixed 2026-12-08 before any arm's protocol had finished): all
# LRs to step 200 (100 steps past the warm-up), the better 2 to 400, the best to 1,000: 1,600
# steps per task instead of 3,000, so a Hawk-50m arm (pre-training and both tasks) fits the one
# warm machine its checkpoint lives on (STATUS.md: the device-time plan).
SETTINGS = dict(steps=1000, batch_size=32, eval_every=100, heldout_examples=16,
                perplexity_examples=8, extra_learning_rates=2, prune_at=(200, 400))
TINY = dict(steps=4, batch_size=8, eval_every=2, heldout_examples=2, perplexity_examples=2,
            log_every=1, prune_at=(2,))  # the GPU path's pause at a pruning step, resumed


def settings_for(run: TrainedRun, task: str, tiny: bool = False) -> FinetuneSettings:
  """The study's protocol for one task, its LR sweep scaled to the run's peak (default 3e-3)."""
  return FinetuneSettings(tasks=(task,), lr_scale=run.config.train.learning_rate / 3e-3,
                          **(TINY if tiny else SETTINGS))


def finetune_task(workdir: str, task: str, *, tiny: bool = False,
                  run: TrainedRun | None = None) -> str:
  """Runs the protocol for `task` on the run's latest checkpoint; returns the JSON's path."""
  run = run or load_run(workdir)
  evaluator = Evaluator(run.config, run.tokenizer, run.setup)
  result = protocol_for_run(run, evaluator, settings_for(run, task, tiny),
                            progress_dir=finetune_progress.progress_dir(workdir))
  path = os.path.join(workdir, FINETUNE_DIR, f"protocol-{task}.json")
  result.write(path)
  return path


_PROGRAM = "experiments.study.finetune"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "the study run's workdir", required=True)
  flags.DEFINE_enum("task", None, ["phonebook", "mqar"], "the task to fine-tune", required=True)
  flags.DEFINE_bool("tiny", False, "a few steps (CPU smoke runs)")


def main(argv: list[str]) -> None:
  """Prints the protocol file's path; user errors end in one line, exit status 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  with cli.user_errors(_PROGRAM):
    check_writable(os.path.join(f.workdir, FINETUNE_DIR), hint="the protocol's file goes there")
    print(finetune_task(f.workdir, f.task, tiny=f.tiny))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
