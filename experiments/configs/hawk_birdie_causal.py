"""Arm hawk_birdie_causal: Birdie's reward-driven mixture, causal Hawk.

Run alone from the repository root (about 3 minutes on one H100, see common.py):
    python -m birdie_jax.main --config=experiments/configs/hawk_birdie_causal.py \
        --workdir=workdirs/paper/hawk_birdie_causal
`python -m experiments.reproduce_paper` trains, fine-tunes and evaluates every arm. The variant
`:tiny` is a CPU smoke run.
"""
from experiments.configs import common


def get_config(arg: str | None = None):
  """`arg`: None for the GPU arm, 'tiny' for a CPU smoke run."""
  return common.arm_config("hawk", "birdie_causal", bidirectional=False, arg=arg)
