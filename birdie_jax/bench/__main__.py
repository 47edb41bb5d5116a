"""`python -m birdie_jax.bench <subcommand> [flags]`: runs `birdie_jax.bench.<module>.main`.

Add a subcommand by adding a row to `SUBCOMMANDS`; its module defines `main(argv: list[str])`,
parsing with `birdie_jax.cli.ArgumentParser` so that a bad flag value ends in one line before any
measurement.
"""
from __future__ import annotations

import importlib
import sys

from birdie_jax import cli

SUBCOMMANDS = {
    "objectives": ("birdie_jax.bench.objectives", "objective and mixture throughput per CPU core"),
    "controller": ("birdie_jax.bench.controller", "seconds per reward-controller update"),
    "scan": ("birdie_jax.bench.scan", "linear_scan implementations against the HBM floor"),
    "train": ("birdie_jax.bench.train", "train-step tokens/s, MFU, memory, compile time"),
    "profile": ("birdie_jax.bench.profile", "one train step's device time by category (a trace)"),
    "decode": ("birdie_jax.bench.decode", "batched generation tokens/s against prompt length"),
    "tpu_aot": ("birdie_jax.bench.tpu_aot", "compile the Pallas scan for a TPU topology from CPU"),
    "soak": ("birdie_jax.bench.soak", "thousands of tiny steps: host memory and disk stay bounded"),
}


def main(argv: list[str]) -> int:
  """Runs the subcommand named by argv[0] with the remaining arguments; without one (or with
  -h) prints the list, an unknown one ends in one line (exit status 2), as a bad flag does."""
  if not argv or argv[0] in ("-h", "--help"):
    usage = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    print(f"usage: python -m birdie_jax.bench <subcommand> [flags]\n{usage}", file=sys.stderr)
    return 2 if not argv else 0
  if argv[0] not in SUBCOMMANDS:
    cli.fail("birdie_jax.bench", f"unknown subcommand {argv[0]!r}; the subcommands are "
             f"{', '.join(SUBCOMMANDS)}")
  module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
  module.main(argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
