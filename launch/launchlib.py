"""What the launchers share: the pinned JAX, install and train command lines, a dry-run runner.

Standard library only, so a launcher runs before anything is installed (and without gcloud for
`--dry-run`). Every command is printed as one shell line, exactly as it runs.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
# pip extras of `jax` per accelerator (the `jax[...]` extra pins the matching plugin or libtpu).
JAX_EXTRAS = {"cpu": None, "tpu": "tpu", "cuda12": "cuda12", "cuda13": "cuda13"}
# JAX_PLATFORMS per accelerator: a missing accelerator fails at start, not as a slow CPU run.
PLATFORMS = {"cpu": "cpu", "tpu": "tpu", "cuda12": "cuda", "cuda13": "cuda"}


def pinned_jax_version(requirements: pathlib.Path = REPO / "requirements.txt") -> str:
  """The `jax==X` pin of requirements.txt."""
  match = re.search(r"^jax==([^\s;#]+)", requirements.read_text(encoding="utf-8"), re.MULTILINE)
  if match is None:
    raise SystemExit(f"no jax==<version> pin in {requirements}")
  return match.group(1)


def pip_install_args(accelerator: str, workdir: str = "") -> list[str]:
  """`install ...` arguments for pip: the pinned requirements (with requirements-gcs.txt for a
  `gs://` workdir), this package, JAX's extra."""
  args = ["install", "-q", "-r", "requirements.txt"]
  if workdir.startswith("gs://"):
    args += ["-r", "requirements-gcs.txt"]
  args += ["-e", "."]
  extra = JAX_EXTRAS[accelerator]
  if extra:
    args.append(f"jax[{extra}]=={pinned_jax_version()}")
  return args


def train_command(python: str, config: str, workdir: str, overrides: Sequence[str],
                  env: Mapping[str, str]) -> list[str]:
  """`env K=V ... python -m birdie_jax.main --config=... --workdir=... overrides`."""
  assignments = [f"{key}={value}" for key, value in env.items()]
  return (["env", *assignments] if assignments else []) + [
      python, "-m", "birdie_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides]


class CommandFailed(Exception):
  """A launched command exited non-zero."""

  def __init__(self, command: Sequence[str], status: int):
    super().__init__(f"exit status {status}: {shlex.join(command)}")
    self.status = status


class Runner:
  """Prints each command as a shell line; runs it unless `dry_run`."""

  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def stage(self, title: str) -> None:
    """Prints a comment line naming the next stage."""
    print(f"# {title}", flush=True)

  def run(self, command: Sequence[str], cwd: pathlib.Path | None = None) -> None:
    """Runs `command` (from `cwd`); CommandFailed if it exits non-zero."""
    print(shlex.join(command), flush=True)
    if self.dry_run:
      return
    status = subprocess.run(list(command), cwd=cwd, check=False).returncode
    if status:
      raise CommandFailed(command, status)


def run_steps(header: str, steps: Sequence[tuple[str, list[list[str]]]], dry_run: bool) -> None:
  """Prints `header`, then runs (or prints) each step's commands from the repo root."""
  runner = Runner(dry_run)
  runner.stage(header)
  for step, step_commands in steps:
    runner.stage(step)
    for command in step_commands:
      runner.run(command, cwd=REPO)


def add_run_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
  """--config, --workdir, --dry-run and the trailing `-- --config.x=y` overrides."""
  parser.add_argument("--config", required=required,
                      help="config file and variant, e.g. configs/sweep.py:hawk-1.4b-birdie")
  parser.add_argument("--workdir", required=required, help="the run's checkpoints, metrics, logs")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the commands instead of running them")
  parser.add_argument("overrides", nargs="*",
                      help="after `--`: config overrides, e.g. -- --config.train.steps=100")


def main_guard(run: Callable[[], None]) -> None:
  """Calls `run()`; a failed command ends the program with its status and one line."""
  try:
    run()
  except CommandFailed as e:
    print(f"launch: {e}", file=sys.stderr)
    sys.exit(e.status)

