"""Fine-tune a run's latest checkpoint on the phonebook (paper A.9, scaled) and evaluate it.

    python -m experiments.phonebook_finetune --workdir=workdirs/paper/hawk_birdie [--tiny]

Writes `<workdir>/finetune/eval/<step>.json` (and its markdown table and plots) and
`<workdir>/finetune/losses.json`; the protocol and the evaluation settings are those of
`experiments/configs/common.py` (`--tiny`: its CPU smoke scale).
"""
from __future__ import annotations

import json
import os

from absl import app, flags
import ml_collections
import numpy as np

from birdie_jax import cli
from birdie_jax.errors import ConfigError
from birdie_jax.evals.finetune import finetune
from birdie_jax.evals.report import Report
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.tasks import parse_names
from birdie_jax.trained_run import TrainedRun, load_run
from experiments.configs import common

FINETUNE_DIR = "finetune"


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


def write_finetuned(workdir: str, report: Report, losses: np.ndarray) -> None:
  """Stores the fine-tuned report and losses under `workdir/finetune`."""
  folder = os.path.join(workdir, FINETUNE_DIR)
  report.write(os.path.join(folder, "eval"))
  with open(os.path.join(folder, "losses.json"), "w", encoding="utf-8") as f:
    json.dump([[int(s), float(v)] for s, v in losses], f)


def main(argv: list[str]) -> None:
  """Fine-tunes, evaluates, prints the markdown table; user errors end in one line, exit 2."""
  del argv
  f = flags.FLAGS
  cli.quiet_logging()
  arg = common.ARG_TINY if f.tiny else None
  try:
    run = load_run(f.workdir)
    evaluator = Evaluator(run.config, run.tokenizer, run.setup,
                          settings=common.eval_settings_for(arg))
    report, losses = finetune_and_evaluate(run, evaluator, common.finetune_settings(arg))
  except ConfigError as e:
    cli.fail("experiments.phonebook_finetune", e)
  write_finetuned(f.workdir, report, losses)
  print(report.markdown(), end="")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "the training run's directory", required=True)
  flags.DEFINE_bool("tiny", False, "the CPU smoke scale of experiments/configs/common.py")
  app.run(main)
