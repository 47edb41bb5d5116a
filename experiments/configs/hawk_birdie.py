"""Arm hawk_birdie: Birdie's reward-driven mixture, bidirectional-prefix Hawk.

Run alone from the repository root (about 3 minutes on one H100, see common.py):
    python -m birdie_jax.main --config=experiments/configs/hawk_birdie.py \
        --workdir=workdirs/paper/hawk_birdie
`python -m experiments.reproduce_paper` trains, fine-tunes and evaluates every arm. The variant
`:tiny` is a CPU smoke run.
"""
from experiments.configs import common


def get_config(arg: str | None = None):
  """`arg`: None for the GPU arm, 'tiny' for a CPU smoke run."""
  return common.arm_config("hawk", "birdie", bidirectional=True, arg=arg)
