"""The mechanism lab: train models directly on synthetic tasks and sweep them (Zoology-style).

    python -m birdie_jax.lab --config=configs/lab.py:cpu --workdir=workdirs/lab-cpu
    python -m birdie_jax.lab --config=configs/lab.py:gpu --workdir=workdirs/lab-gpu \
        --config.max_minutes=9 --report=experiments/LAB.md

Each point (task x family x width x layout) trains its learning rates x seeds as vmapped
replicas in one compiled step; results land in `<workdir>/points/`, one JSON per point. Run the
same command again to continue: finished points are skipped, an interrupted point resumes from
its saved state (`max_minutes` stops a sweep on purpose, e.g. inside a 10-minute GPU call).
At the end (also after a stop) the report is written: `<workdir>/LAB.md` and its plots, or
`--report=PATH` with the plots beside it. `--report_only` writes it without training.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from birdie_jax import cli
from birdie_jax.lab.report import write_report
from birdie_jax.lab.sweep import run_sweep
from birdie_jax.workdir import check_writable

config_flags.DEFINE_config_file("config", None, "Lab config (configs/lab.py:<sweep>).",
                                lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's folder (results, saved state).",
                               required=True)
_REPORT = flags.DEFINE_string("report", "", "Where to write the report (default: workdir/LAB.md).")
_PLOTS = flags.DEFINE_string("plots", "", "Folder for the report's plots (default: beside it).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the report from the results only.")

_PROGRAM = "birdie_jax.lab"


def main(argv: list[str]) -> None:
  cli.no_arguments(_PROGRAM, argv)
  config = cli.required_config(_PROGRAM, "--config=configs/lab.py:cpu")
  cli.quiet_logging()
  with cli.user_errors(_PROGRAM):
    report_folder = os.path.dirname(os.path.abspath(_REPORT.value)) if _REPORT.value else ""
    for folder in filter(None, (_WORKDIR.value, report_folder, _PLOTS.value)):
      check_writable(folder)  # the report comes after hours of training
    finished = True
    if not _REPORT_ONLY.value:
      finished = run_sweep(config, _WORKDIR.value, log=lambda line: print(line, flush=True))
  path = _REPORT.value or os.path.join(_WORKDIR.value, "LAB.md")
  write_report(_WORKDIR.value, path, plots_folder=_PLOTS.value,
               command=" ".join(["python -m birdie_jax.lab"] + sys.argv[1:]))
  print(f"lab: report in {path}" + ("" if finished else " (partial)"), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
