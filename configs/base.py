"""The embedded default: Birdie on a small bidirectional Hawk, trained on Shakespeare.

The reward-driven controller re-chooses the mixture of the paper's 96 objective configurations
(7 classes) at each evaluation; `mixture.png` in the workdir shows the class weights and losses.

Run (from the repo root; about 4-6 minutes on 2 CPU cores):
    python -m birdie_jax.main --config=configs/base.py --workdir=workdirs/base
Variants (`--config=configs/base.py:<arg>`):
    ntp    the same model, causal, with next-token prediction only (the paper's baseline)
    tiny   a few-second smoke run (tests, CI): next-token prediction on a byte tokenizer
Override any key: `--config.train.steps=2000 --config.model.width=256`.
Running the same command again resumes from the workdir's latest checkpoint; a larger
`train.steps` continues a finished run.
"""
from birdie_jax.config import default_config


def get_config(arg: str | None = None):
  """`arg`: None for the default Birdie run, 'ntp' for its baseline, 'tiny' for a smoke run."""
  config = default_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.train.steps = 300              # 4-6 min on 2 CPU cores
  config.train.eval_every = 50          # validation loss every 50 steps
  config.checkpoint.every_steps = 100   # 3 checkpoints over the run
  config.controller.schedule_scale = 0.1  # evaluations at 1, 5, 25, 50, 100, 150, 200, 300
  if arg == "ntp":
    config.curriculum = "ntp"
    config.model.bidirectional = False
  elif arg == "tiny":
    config.curriculum = "ntp"
    config.model.bidirectional = False
    config.model.width = 32
    config.model.depth = 2
    config.model.lru_width = 32
    config.model.num_heads = 2
    config.data.tokenizer.kind = "bytes"
    config.train.steps = 8
    config.train.batch_size = 8
    config.train.seq_len = 64
    config.train.warmup_steps = 2
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.eval_batches = 1
    config.checkpoint.every_steps = 4
  elif arg is not None:
    raise ValueError(f"unknown variant {arg!r} of configs/base.py (known: ntp, tiny)")
  return config
