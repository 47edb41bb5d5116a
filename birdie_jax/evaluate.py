"""Evaluate a run's latest checkpoint on the retrieval and language tasks (`birdie_jax/evals`).

    python -m birdie_jax.evaluate --workdir=workdirs/base [--config=configs/base.py] \
        [--tasks=phonebook,mqar] [--examples=32] [--seq_len=2048]

Reads the run's `config.json` (or `--config`, which must describe the same model), its tokenizer
and the newest checkpoint's params; writes `eval/<step>.json`, `eval/<step>.md` (printed too) and
`eval/<step>-<task>.png` into the workdir. `--tasks`, `--examples` and `--seq_len` override the
config's `eval` keys of the same names.

Each task's result is written the moment the task is done (`eval/<step>-<task>.json` and its plot,
each file atomically), the summary `<step>.json` and `.md` after the last: a failure or a stop in a
late task loses none of the finished ones. Every flag and the eval settings are checked, and the
workdir is checked writable (a probe file), before any checkpoint is read; the tasks' fit in the
context before anything compiles. A run in a read-only place (a mount, a bucket you may only read)
stops at the start in one line: copy or link it into a writable folder first (`config.json`,
`tokenizer/`, `checkpoints/`; `metrics.jsonl` for the objectives' loss curves).

`--tasks` may also name `objectives` (alone or with tasks: `--tasks=objectives,copying`): the
run's competence at its own training objectives, per objective class (`evals/objectives_eval.py`),
written to `objectives/<step>.json`, `.md` (printed) and `-losses.png` (each class's validation
loss over training, from `metrics.jsonl`).
"""
from __future__ import annotations

import os

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from birdie_jax import cli
from birdie_jax.config import validate_config
from birdie_jax.evals import objectives_report
from birdie_jax.evals.objectives_eval import objective_competence
from birdie_jax.evals.report import Report, write_task
from birdie_jax.evals.runner import Evaluator, settings_of
from birdie_jax.evals.settings import validate_settings
from birdie_jax.trained_run import load_config, load_run, TrainedRun
from birdie_jax.workdir import as_path, check_writable

OBJECTIVES = "objectives"  # the pseudo-task of --tasks: competence at the training objectives


def split_objectives(tasks: str) -> tuple[bool, str]:
  """'objectives, copying' -> (True, 'copying'): whether `tasks` names the objectives pseudo-task,
  and the evaluation tasks it names besides."""
  names = [n.strip() for n in tasks.split(",") if n.strip()]
  return OBJECTIVES in names, ",".join(n for n in names if n != OBJECTIVES)


def evaluate_objectives(workdir: str, *, config: ml_collections.ConfigDict | None = None,
                        run: TrainedRun | None = None) -> dict:
  """Objective competence of the latest checkpoint of `workdir` (or of `run`, loaded from it),
  written into `workdir/objectives`."""
  run = run or load_run(workdir, config)
  result = objective_competence(run.config, run.tokenizer, run.setup, run.params, step=run.step)
  objectives_report.write(result, workdir)
  return result


def evaluate_run(workdir: str, *, config: ml_collections.ConfigDict | None = None,
                 settings: ml_collections.ConfigDict | None = None,
                 run: TrainedRun | None = None) -> Report:
  """Evaluates the latest checkpoint of `workdir` (or `run`, loaded from it) on the `settings`
  tasks (default: the config's `eval` section) and writes the report into `workdir/eval`."""
  run = run or load_run(workdir, config)
  folder = os.path.join(workdir, "eval")
  report = Evaluator(run.config, run.tokenizer, run.setup, settings=settings).run(
      run.params, step=run.step, on_task=lambda result: write_task(folder, run.step, result))
  report.write_summary(folder)
  return report


def with_overrides(settings: ml_collections.ConfigDict, *, tasks: str = "", examples: int = 0,
                   seq_len: int = 0) -> ml_collections.ConfigDict:
  """A copy of `settings` with the non-empty overrides applied."""
  out = ml_collections.ConfigDict(settings.to_dict())
  for key, value in (("tasks", tasks), ("examples", examples), ("seq_len", seq_len)):
    if value:
      out[key] = value
  return out


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]); default: "
                                  "the run's config.json.", lock_config=True)
  flags.DEFINE_string("workdir", None, "the training run's directory", required=True)
  flags.DEFINE_string("tasks", "", "comma-separated tasks (default: the config's eval.tasks); "
                      "'objectives' adds competence at the run's training objectives")
  flags.DEFINE_integer("examples", 0, "examples per difficulty (default: eval.examples)",
                       lower_bound=0)
  flags.DEFINE_integer("seq_len", 0, "context the examples fill (default: eval.seq_len)",
                       lower_bound=0)


_PROGRAM = "birdie_jax.evaluate"


def main(argv: list[str]) -> None:
  """Prints the markdown report; a user error ends in one line on stderr, exit status 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  cli.quiet_logging()
  given = cli.config_flag(_PROGRAM)
  with cli.user_errors(_PROGRAM):
    config = load_config(f.workdir) if given is None else given
    validate_config(config)
    objectives, tasks = split_objectives(f.tasks)
    settings = with_overrides(settings_of(config), tasks=tasks, examples=f.examples,
                              seq_len=f.seq_len)
    validate_settings(settings)  # before the checkpoint is read
    cli.require(as_path(f.workdir).is_dir(), f"--workdir {f.workdir} is not a folder")
    check_writable(f.workdir, hint="evaluate writes its reports there")
    run = load_run(f.workdir, config)
    if objectives:
      print(objectives_report.markdown(evaluate_objectives(f.workdir, run=run)), end="")
    if tasks or not objectives:
      print(evaluate_run(f.workdir, settings=settings, run=run).markdown(), end="")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
