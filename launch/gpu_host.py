"""Train on a GPU host: one process per host drives all of its GPUs; several hosts optionally.

Usage (from the repo root of a clone on the host):
    python launch/gpu_host.py --config=configs/sweep.py:hawk-150m-birdie \\
        --workdir=workdirs/hawk-150m-birdie [--install] [--cuda=12] [--dry-run] \\
        [-- --config.data.source=/data/pile/*.jsonl.gz --config.train.steps=100]
Several hosts (run the same command on each, changing only --process-id; the workdir must be
on storage they all reach, e.g. NFS or gs://):
    python launch/gpu_host.py ... --coordinator=10.0.0.1:1234 --num-processes=2 --process-id=0

Steps:
    install  (with --install) a venv in .venv with requirements.txt, this package, jax[cudaNN]
    check    nvidia-smi -L: the GPUs this process will use
    train    python -m birdie_jax.main with JAX_PLATFORMS=cuda (no silent CPU fallback) and,
             for several hosts, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
             which birdie_jax.main passes to jax.distributed.initialize
JAX gives one process every local GPU, so the mesh (`mesh.shape`, -1 fills) spans all GPUs of
all hosts. The run resumes from the workdir's latest checkpoint when started again.
`--dry-run` prints every command (one shell line each, `#` lines name the steps), runs nothing.
"""
from __future__ import annotations

import argparse

import launchlib


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command line; multi-host flags must come together."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--install", action="store_true", help="create .venv and install first")
  parser.add_argument("--cuda", choices=("12", "13"), default="12", help="CUDA major version")
  parser.add_argument("--python", default="python3", help="Python for the venv (>= 3.11)")
  parser.add_argument("--coordinator", default="", help="multi-host: HOST:PORT of process 0")
  parser.add_argument("--num-processes", type=int, default=1, help="multi-host: host count")
  parser.add_argument("--process-id", type=int, default=0, help="multi-host: this host's index")
  launchlib.add_run_flags(parser)
  args = parser.parse_args(argv)
  if args.num_processes > 1 and not args.coordinator:
    parser.error("--num-processes > 1 needs --coordinator=HOST:PORT (process 0's address)")
  if not 0 <= args.process_id < args.num_processes:
    parser.error(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
  return args


def commands(args: argparse.Namespace) -> list[tuple[str, list[list[str]]]]:
  """(step, commands) in order."""
  accelerator = f"cuda{args.cuda}"
  env = {"JAX_PLATFORMS": launchlib.PLATFORMS[accelerator]}
  if args.num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=args.coordinator,
               JAX_NUM_PROCESSES=str(args.num_processes), JAX_PROCESS_ID=str(args.process_id))
  steps = []
  if args.install:
    steps.append(("install", [[args.python, "-m", "venv", ".venv"],
                              [".venv/bin/pip", *launchlib.pip_install_args(accelerator, args.workdir)]]))
  steps.append(("check", [["nvidia-smi", "-L"]]))
  steps.append(("train", [launchlib.train_command(".venv/bin/python", args.config, args.workdir,
                                                  args.overrides, env)]))
  return steps


def launch(args: argparse.Namespace) -> None:
  """Runs (or prints) every step from the repo root."""
  launchlib.run_steps(f"in {launchlib.REPO}", commands(args), args.dry_run)


if __name__ == "__main__":
  launchlib.main_guard(lambda: launch(parse_args()))
