"""Train on a Cloud TPU VM or pod slice: create it, copy the code, install, run, fetch, delete.

Usage (from the repo root; needs the gcloud CLI, authenticated, except for --dry-run):
    python launch/tpu_vm.py --name=birdie-v5e --zone=us-west4-a --accelerator=v5litepod-256 \\
        --config=configs/sweep.py:hawk-1.4b-birdie --workdir=gs://BUCKET/birdie/hawk-1.4b-birdie \\
        [--project=P] [--spot] [--version=RUNTIME] [--stages=...] [--dry-run] \\
        [-- --config.data.source=/data/pile/*.jsonl.gz --config.train.steps=100]

Stages (`--stages`, comma-separated; default all, in this order):
    create   gcloud compute tpus tpu-vm create (runtime image per generation, or --version)
    copy     tar the working tree (no .git, .venv, workdirs) and scp it to every worker
    install  on every worker: Python 3.11, a venv, requirements.txt (and requirements-gcs.txt
             for a gs:// workdir), this package, jax[tpu]
    run      on every worker, detached: python -m birdie_jax.main (each host joins the run
             through JAX's Cloud TPU detection); output to ~/birdie_jax/run.log
    logs     stream worker 0's run.log until training ends; exits with training's status
    fetch    run.log and the workdir (without checkpoints when on GCS) into workdirs/tpu-<name>/
    delete   gcloud compute tpus tpu-vm delete
If a stage fails the VM is left up and the delete command is printed: after a dropped connection,
`--stages=logs,fetch,delete` reattaches. Multi-host slices (more than 8 chips or TensorCores)
need a workdir every host shares (gs://...): Orbax writes each host's shards there. Training
resumes from the workdir's latest checkpoint, so a preempted spot slice re-runs the same command.
`--dry-run` prints every command (one shell line each, `#` lines name the stages), runs nothing.
"""
from __future__ import annotations

import argparse
import re
import shlex

import launchlib

STAGES = ("create", "copy", "install", "run", "logs", "fetch", "delete")
# Default TPU VM runtime image per accelerator generation (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
REMOTE_DIR = "birdie_jax"  # under the workers' home directories
EXCLUDES = ("./.git", "./.venv", "./workdirs", "./.jax_cache", "__pycache__")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command line; exits with a usage line for a bad accelerator, stage or workdir."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--name", required=True, help="TPU VM name")
  parser.add_argument("--zone", required=True, help="e.g. us-west4-a")
  parser.add_argument("--accelerator", required=True,
                      help="accelerator type, e.g. v4-128, v5litepod-256, v5p-128, v6e-64")
  parser.add_argument("--project", default="", help="GCP project (default: gcloud's)")
  parser.add_argument("--version", default="", help="runtime image (default: per generation)")
  parser.add_argument("--spot", action="store_true", help="a Spot (preemptible) slice")
  parser.add_argument("--python", default="python3.11", help="the workers' Python (>= 3.11)")
  parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
  launchlib.add_run_flags(parser)
  args = parser.parse_args(argv)
  match = re.fullmatch(r"(v4|v5litepod|v5p|v6e)-(\d+)", args.accelerator)
  if match is None:
    parser.error(f"--accelerator must be one of {sorted(RUNTIME_VERSIONS)} then -<size>, "
                 f"e.g. v5litepod-256; got {args.accelerator!r}")
  args.version = args.version or RUNTIME_VERSIONS[match.group(1)]
  args.stages = [s for s in args.stages.split(",") if s]
  unknown = sorted(set(args.stages) - set(STAGES))
  if unknown:
    parser.error(f"unknown --stages {unknown}; stages are {','.join(STAGES)}")
  if int(match.group(2)) > 8 and not args.workdir.startswith("gs://"):
    parser.error(f"{args.accelerator} has several hosts: --workdir must be a path they all "
                 f"share, e.g. gs://BUCKET/birdie/run (got {args.workdir!r})")
  return args


def gcloud(args: argparse.Namespace, *command: str) -> list[str]:
  """A `gcloud compute tpus tpu-vm` command with the zone (and project) flags."""
  out = ["gcloud", "compute", "tpus", "tpu-vm", *command, f"--zone={args.zone}"]
  if args.project:
    out.append(f"--project={args.project}")
  return out


def ssh(args: argparse.Namespace, worker: str, script: str) -> list[str]:
  """Runs the shell `script` on `worker` ('all' or an index) of the VM."""
  return gcloud(args, "ssh", args.name, f"--worker={worker}", f"--command={script}")


def tarball(args: argparse.Namespace) -> str:
  """The local archive of the working tree."""
  return f"/tmp/birdie_jax-{args.name}.tar.gz"


def install_script(args: argparse.Namespace) -> str:
  """Every worker: Python, the unpacked code, a venv with the pinned requirements and libtpu."""
  pip = shlex.join([".venv/bin/pip", *launchlib.pip_install_args("tpu", args.workdir)])
  return " && ".join([
      "sudo apt-get -qq update",
      f"sudo DEBIAN_FRONTEND=noninteractive apt-get -qq install -y {args.python} "
      f"{args.python}-venv",
      f"mkdir -p ~/{REMOTE_DIR}",
      f"tar xzf ~/{REMOTE_DIR}.tar.gz -C ~/{REMOTE_DIR}",
      f"cd ~/{REMOTE_DIR}",
      f"{args.python} -m venv .venv",
      pip])


def run_script(args: argparse.Namespace) -> str:
  """Every worker: training detached from the SSH session; pid, log and exit status in files."""
  train = launchlib.train_command(".venv/bin/python", args.config, args.workdir, args.overrides,
                                  {"JAX_PLATFORMS": launchlib.PLATFORMS["tpu"]})
  job = f"{shlex.join(train)} > run.log 2>&1; echo $? > run.exit"
  return (f"cd ~/{REMOTE_DIR} && rm -f run.exit && "
          f"{{ setsid nohup bash -c {shlex.quote(job)} < /dev/null > /dev/null 2>&1 & "
          f"echo $! > run.pid; }}")


def logs_script() -> str:
  """Worker 0: follows run.log until training exits, then exits with training's status."""
  return (f"cd ~/{REMOTE_DIR} && tail -n +1 --pid=\"$(cat run.pid)\" -F run.log; "
          f"exit \"$(cat run.exit 2>/dev/null || echo 1)\"")


def fetch_commands(args: argparse.Namespace) -> list[list[str]]:
  """run.log and the workdir into workdirs/tpu-<name>/ (checkpoints stay on GCS)."""
  dest = f"workdirs/tpu-{args.name}"  # git ignores it; the copy stage leaves it out
  commands = [["mkdir", "-p", dest],
              gcloud(args, "scp", f"{args.name}:{REMOTE_DIR}/run.log", f"{dest}/run.log",
                     "--worker=0")]
  if args.workdir.startswith("gs://"):
    commands.append(["gcloud", "storage", "rsync", "--recursive", "--exclude=^checkpoints/",
                     args.workdir, f"{dest}/workdir"])
  else:
    remote = args.workdir if args.workdir.startswith("/") else f"{REMOTE_DIR}/{args.workdir}"
    commands.append(gcloud(args, "scp", "--recurse", f"{args.name}:{remote}", f"{dest}/",
                           "--worker=0"))
  return commands


def stage_commands(args: argparse.Namespace, stage: str) -> list[list[str]]:
  """The commands of one stage, in order."""
  if stage == "create":
    create = gcloud(args, "create", args.name, f"--accelerator-type={args.accelerator}",
                    f"--version={args.version}")
    return [create + (["--spot"] if args.spot else [])]
  if stage == "copy":
    excludes = [f"--exclude={pattern}" for pattern in EXCLUDES]
    return [["tar", "czf", tarball(args), *excludes, "-C", str(launchlib.REPO), "."],
            gcloud(args, "scp", tarball(args), f"{args.name}:{REMOTE_DIR}.tar.gz",
                   "--worker=all")]
  if stage == "install":
    return [ssh(args, "all", install_script(args))]
  if stage == "run":
    return [ssh(args, "all", run_script(args))]
  if stage == "logs":
    return [ssh(args, "0", logs_script())]
  if stage == "fetch":
    return fetch_commands(args)
  return [gcloud(args, "delete", args.name, "--quiet")]


def launch(args: argparse.Namespace) -> None:
  """Runs (or prints) the chosen stages in order; on failure, says how to clean up."""
  runner = launchlib.Runner(args.dry_run)
  for stage in (s for s in STAGES if s in args.stages):
    runner.stage(stage)
    try:
      for command in stage_commands(args, stage):
        runner.run(command)
    except launchlib.CommandFailed:
      if stage != "create":
        print(f"launch: the TPU VM {args.name} is still up; reattach with --stages=logs,fetch,"
              f"delete or delete it: {shlex.join(stage_commands(args, 'delete')[0])}")
      raise


if __name__ == "__main__":
  launchlib.main_guard(lambda: launch(parse_args()))
