"""Set up and train on a Colab runtime (CPU, GPU or TPU), from a cell of a notebook.

Usage, in Colab cells (the notebook experiments/notebooks/birdie_demo.ipynb does the same):
    !git clone https://github.com/OWNER/birdie_jax.git   # placeholder: this repository's URL
    %cd birdie_jax
    !python launch/colab.py --config=configs/sweep.py:hawk-tiny-birdie --workdir=/content/runs/demo
Install only (then train from Python with birdie_jax.train.loop.train_and_evaluate):
    !python launch/colab.py
Steps:
    install  pip install requirements.txt, this package (editable) and JAX's extra for the
             runtime (jax[tpu] or jax[cuda12]) into the runtime's own Python (--no-install skips)
    train    (with --config and --workdir) python -m birdie_jax.main, JAX_PLATFORMS set to the
             runtime's accelerator
The runtime is detected (`--runtime=auto`): TPU if /dev/accel* or /dev/vfio/<n> exists (Colab's
TPU VMs), GPU if /dev/nvidia0 exists, else CPU. A workdir under /content/drive (after mounting
Drive in the notebook) survives the runtime; training resumes from its latest checkpoint.
`--dry-run` prints every command (one shell line each, `#` lines name the steps), runs nothing.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import launchlib

RUNTIMES = {"cpu": "cpu", "gpu": "cuda12", "tpu": "tpu"}  # runtime -> accelerator for launchlib


def detect_runtime() -> str:
  """'tpu', 'gpu' or 'cpu': what this machine's device files show."""
  if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
    return "tpu"
  if os.path.exists("/dev/nvidia0"):
    return "gpu"
  return "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command line; --config and --workdir come together."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runtime", choices=("auto", *RUNTIMES), default="auto",
                      help="the accelerator to install for and train on")
  parser.add_argument("--no-install", action="store_true", help="skip pip install")
  launchlib.add_run_flags(parser, required=False)
  args = parser.parse_args(argv)
  if bool(args.config) != bool(args.workdir):
    parser.error("--config and --workdir come together (neither: install only)")
  if args.runtime == "auto":
    args.runtime = detect_runtime()
  return args


def commands(args: argparse.Namespace) -> list[tuple[str, list[list[str]]]]:
  """(step, commands) in order, for the runtime's own Python."""
  accelerator = RUNTIMES[args.runtime]
  steps = []
  if not args.no_install:
    steps.append(("install", [[sys.executable, "-m", "pip",
                               *launchlib.pip_install_args(accelerator, args.workdir or "")]]))
  if args.config:
    env = {"JAX_PLATFORMS": launchlib.PLATFORMS[accelerator]}
    steps.append(("train", [launchlib.train_command(sys.executable, args.config, args.workdir,
                                                    args.overrides, env)]))
  return steps


def launch(args: argparse.Namespace) -> None:
  """Runs (or prints) every step from the repo root."""
  launchlib.run_steps(f"runtime: {args.runtime}, in {launchlib.REPO}", commands(args),
                      args.dry_run)


if __name__ == "__main__":
  launchlib.main_guard(lambda: launch(parse_args()))
