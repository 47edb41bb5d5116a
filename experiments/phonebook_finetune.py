"""Fine-tune a run's latest checkpoint on the phonebook (paper A.9, scaled) and evaluate it.

    python -m experiments.phonebook_finetune --workdir=workdirs/paper/hawk_birdie [--tiny]
    python -m experiments.phonebook_finetune --workdir=... --protocol [--tiny]

Writes `<workdir>/finetune/eval/<step>.json` (and its markdown table and plots) and
`<workdir>/finetune/losses.json`; the protocol and the evaluation settings are those of
`experiments/configs/common.py` (`--tiny`: its CPU smoke scale): one warm-up + cosine run on the
tasks together, no replay. `--protocol` runs `birdie_jax.train.finetune_protocol` instead (per
task an LR sweep with replay, chosen on a held-out split, `FinetuneSettings()`'s defaults; `--tiny`:
a few steps) and also writes its runs and learning curves to `<workdir>/finetune/protocol.json`;
its progress is kept in `<workdir>/finetune/checkpoints/` (the same command resumes a killed one).
"""
from __future__ import annotations

import json
import os

from absl import app, flags
import ml_collections
import numpy as np

from birdie_jax import cli
from birdie_jax.evals.report import Report
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.tasks import parse_names
from birdie_jax.train import finetune_progress
from birdie_jax.train.finetune import finetune
from birdie_jax.train.finetune_protocol import FinetuneSettings, protocol_for_run
from birdie_jax.trained_run import TrainedRun, load_run
from birdie_jax.workdir import FINETUNE_DIR, check_writable
from experiments.configs import common



def finetune_and_evaluate(run: TrainedRun, evaluator: Evaluator,
                          settings: ml_collections.ConfigDict) -> tuple[Report, np.ndarray]:
  """The evaluator's report on `run`'s params fine-tuned per `settings`
  (`common.finetune_settings`), and the (step, loss) pairs logged while fine-tuning."""
  params, losses = finetune(
      evaluator, run.config, run.params, task_names=parse_names(settings.tasks),
      steps=settings.steps, batch_size=settings.batch_size,
      learning_rate=settings.learning_rate, seed=settings.seed,
      difficulties={"phonebook": range(1, settings.numbers + 1)})
  return evaluator.run(params, step=run.step), losses


TINY_PROTOCOL = dict(steps=2, batch_size=8, eval_every=2, heldout_examples=2, perplexity_examples=2,
                     log_every=1)  # the CPU smoke scale of `--protocol --tiny`


def protocol_and_evaluate(run: TrainedRun, evaluator: Evaluator, workdir: str,
                          settings: FinetuneSettings) -> Report:
  """The fine-tuning protocol on `run`; writes `workdir/finetune/protocol.json` and returns the
  chosen runs' evaluations (each task from its own fine-tune) as one report."""
  result = protocol_for_run(run, evaluator, settings,
                            progress_dir=finetune_progress.progress_dir(workdir))
  result.write(os.path.join(workdir, FINETUNE_DIR, "protocol.json"))
  return result.report(run.step, evaluator)


def write_finetuned(workdir: str, report: Report, losses: np.ndarray) -> None:
  """Stores the fine-tuned report and losses under `workdir/finetune`."""
  folder = os.path.join(workdir, FINETUNE_DIR)
  report.write(os.path.join(folder, "eval"))
  with open(os.path.join(folder, "losses.json"), "w", encoding="utf-8") as f:
    json.dump([[int(s), float(v)] for s, v in losses], f)


_PROGRAM = "experiments.phonebook_finetune"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "the training run's directory", required=True)
  flags.DEFINE_bool("tiny", False, "the CPU smoke scale of experiments/configs/common.py")
  flags.DEFINE_bool("protocol", False, "the fine-tuning protocol (train/finetune_protocol.py)")


def main(argv: list[str]) -> None:
  """Fine-tunes, evaluates, prints the markdown table; user errors end in one line, exit 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  cli.quiet_logging()
  arg = common.ARG_TINY if f.tiny else None
  with cli.user_errors(_PROGRAM):
    check_writable(os.path.join(f.workdir, FINETUNE_DIR), hint="the results are written there")
    run = load_run(f.workdir)
    evaluator = Evaluator(run.config, run.tokenizer, run.setup,
                          settings=common.eval_settings_for(arg))
    if f.protocol:
      settings = FinetuneSettings(**(TINY_PROTOCOL if f.tiny else {}))
      report, losses = protocol_and_evaluate(run, evaluator, f.workdir, settings), None
    else:
      report, losses = finetune_and_evaluate(run, evaluator, common.finetune_settings(arg))
  if losses is None:
    report.write(os.path.join(f.workdir, FINETUNE_DIR, "eval"))
  else:
    write_finetuned(f.workdir, report, losses)
  print(report.markdown(), end="")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
