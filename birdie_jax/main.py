"""The training job: `python -m birdie_jax.main --config=configs/base.py [--workdir=DIR]`.

Overrides: `--config=configs/base.py:variant`, `--config.train.steps=100`. Everything else lives in
`birdie_jax.train.loop.train_and_evaluate`, which a notebook can call directly.

Multi-process runs start every process with the same command; `--num_processes`, `--process_id`
and `--coordinator_address` (or JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_COORDINATOR_ADDRESS) say
how they meet, and Cloud TPU pod slices, SLURM and Open MPI need none of them
(`birdie_jax/parallel/distributed.py`).
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from birdie_jax.errors import ConfigError, TrainingError
from birdie_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/default", "Checkpoints, metrics, tokenizer.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: HOST:PORT of process 0, the same on every "
    "process (default: $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process: number of processes; 1 turns cluster detection off "
    "(default: $JAX_NUM_PROCESSES, else detected on TPU VMs, SLURM, Open MPI, else 1).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process: this process's index in [0, num_processes) "
    "(default: $JAX_PROCESS_ID).")


def _fail(message: str) -> None:
  print(f"birdie_jax: error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing where a bad config file or override ends in one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_one_line(e))
  except _CONFIG_ERRORS as e:
    _fail(f"bad --config or override ({type(e).__name__}): {_one_line(e)}")
  return []


_CONFIG_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError)


def _one_line(error: BaseException) -> str:
  """The error's message on one line; an embedded traceback is reduced to its last line."""
  text = str(error)
  if "Traceback (most recent call last)" in text:
    head, _, tail = text.partition("Traceback (most recent call last)")
    text = head + tail.strip().splitlines()[-1]
  text = text.replace("\\n", " ").replace("\\'", "")
  return " ".join(text.split()).strip("'\"")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # a config file that failed to load raises its error here
  except _CONFIG_ERRORS as e:
    _fail(f"bad --config ({type(e).__name__}): {_one_line(e)}")
  if config is None:
    _fail("--config is required, e.g. --config=configs/base.py")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter (Orbax) only on request
  from birdie_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    train_and_evaluate(config, _WORKDIR.value)
  except (ConfigError, TrainingError) as e:
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
