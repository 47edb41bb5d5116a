"""The arms of `experiments/reproduce_paper.py`, one config per `<arm>` or `<arm>,tiny`.

Run one alone from the repository root (about 3 minutes on one H100, see common.py):
    python -m birdie_jax.main --config=experiments/configs/paper.py:hawk_birdie \
        --workdir=workdirs/paper/hawk_birdie
`python -m experiments.reproduce_paper` trains, fine-tunes and evaluates every arm. The variant
`<arm>,tiny` (e.g. `paper.py:hawk_ntp,tiny`) is a CPU smoke run.

| arm | family | curriculum | prefix |
| --- | --- | --- | --- |
| hawk_ntp | Hawk | next-token prediction only (the baseline) | causal |
| hawk_ul2 | Hawk | UL2's seven denoisers (paper A.6), fixed mixture | causal |
| hawk_fixed_ratio | Hawk | Birdie's objectives at fixed hand-set ratios | causal |
| hawk_birdie_causal | Hawk | Birdie's reward-driven mixture | causal |
| hawk_birdie | Hawk | Birdie's reward-driven mixture | bidirectional |
| transformer_ntp | Transformer | next-token prediction only | causal |
| transformer_birdie | Transformer | Birdie's reward-driven mixture | prefix LM |
"""
from __future__ import annotations

import ml_collections

from experiments.configs import common

# arm -> (model family, curriculum, bidirectional prefix), in the order the arms run.
ARMS = {
    "hawk_ntp": ("hawk", "ntp", False),
    "hawk_ul2": ("hawk", "ul2", False),
    "hawk_fixed_ratio": ("hawk", "fixed_ratio", False),
    "hawk_birdie_causal": ("hawk", "birdie_causal", False),
    "hawk_birdie": ("hawk", "birdie", True),
    "transformer_ntp": ("transformer", "ntp", False),
    "transformer_birdie": ("transformer", "birdie", True),
}


def arm_config(arm: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """The training config of `arm` at the scale `variant` names (None: one GPU, 'tiny': CPU)."""
  if arm not in ARMS:
    raise ValueError(f"unknown arm {arm!r}; the arms are {', '.join(ARMS)}")
  family, curriculum, bidirectional = ARMS[arm]
  return common.arm_config(family, curriculum, bidirectional=bidirectional, arg=variant)


def get_config(arg: str) -> ml_collections.ConfigDict:
  """The config of `arg`: an arm (see ARMS), or `'<arm>,tiny'` for its CPU smoke run."""
  arm, _, variant = arg.partition(",")
  return arm_config(arm, variant or None)
