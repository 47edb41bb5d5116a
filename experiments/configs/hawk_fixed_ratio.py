"""Arm hawk_fixed_ratio: Birdie's objectives at fixed hand-set ratios, causal Hawk.

Run alone from the repository root (about 3 minutes on one H100, see common.py):
    python -m birdie_jax.main --config=experiments/configs/hawk_fixed_ratio.py \
        --workdir=workdirs/paper/hawk_fixed_ratio
`python -m experiments.reproduce_paper` trains, fine-tunes and evaluates every arm. The variant
`:tiny` is a CPU smoke run.
"""
from experiments.configs import common


def get_config(arg: str | None = None):
  """`arg`: None for the GPU arm, 'tiny' for a CPU smoke run."""
  return common.arm_config("hawk", "fixed_ratio", bidirectional=False, arg=arg)
