"""The training job: `python -m birdie_jax.main --config=configs/base.py [--workdir=DIR]`.

Overrides: `--config=configs/base.py:variant`, `--config.train.steps=100`; `--init_from=DIR` starts
from a released RecurrentGemma checkpoint (`train.init_from`). Everything else lives in
`birdie_jax.train.loop.train_and_evaluate`, which a notebook can call directly.

Multi-process runs start every process with the same command; `--num_processes`, `--process_id`
and `--coordinator_address` (or JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_COORDINATOR_ADDRESS) say
how they meet, and Cloud TPU pod slices, SLURM and Open MPI need none of them
(`birdie_jax/parallel/distributed.py`).
"""
from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from birdie_jax import cli
from birdie_jax.parallel import distributed

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/default", "Checkpoints, metrics, tokenizer.")
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "A first start's params from a RecurrentGemma checkpoint directory (the "
    "same as --config.train.init_from; README: Continuing a released RecurrentGemma).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: HOST:PORT of process 0, the same on every "
    "process (default: $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process: number of processes; 1 turns cluster detection off "
    "(default: $JAX_NUM_PROCESSES, else detected on TPU VMs, SLURM, Open MPI, else 1).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process: this process's index in [0, num_processes) "
    "(default: $JAX_PROCESS_ID).")


_PROGRAM = "birdie_jax"


def main(argv: list[str]) -> None:
  cli.no_arguments(_PROGRAM, argv)
  config = cli.required_config(_PROGRAM, "--config=configs/base.py")
  if _INIT_FROM.value:
    if config.train.init_from not in ("", _INIT_FROM.value):
      cli.fail(_PROGRAM, f"--init_from={_INIT_FROM.value} and --config.train.init_from="
               f"{config.train.init_from} differ: give one")
    config.train.init_from = _INIT_FROM.value
  cli.quiet_logging()
  from birdie_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  with cli.user_errors(_PROGRAM, interrupted=cli.BEFORE_TRAINING):
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
