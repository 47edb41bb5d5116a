"""Arm hawk_ntp: next-token prediction only on a causal Hawk (the baseline).

Run alone from the repository root (about 3 minutes on one H100, see common.py):
    python -m birdie_jax.main --config=experiments/configs/hawk_ntp.py \
        --workdir=workdirs/paper/hawk_ntp
`python -m experiments.reproduce_paper` trains, fine-tunes and evaluates every arm. The variant
`:tiny` is a CPU smoke run.
"""
from experiments.configs import common


def get_config(arg: str | None = None):
  """`arg`: None for the GPU arm, 'tiny' for a CPU smoke run."""
  return common.arm_config("hawk", "ntp", bidirectional=False, arg=arg)
