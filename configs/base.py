"""The embedded default: a small Hawk trained with next-token prediction on Shakespeare.

Run (from the repo root; about 4 minutes on 2 CPU cores):
    python -m birdie_jax.main --config=configs/base.py --workdir=workdirs/base
Variants (`--config=configs/base.py:<arg>`):
    tiny   a few-second smoke run (tests, CI)
Override any key: `--config.train.steps=2000 --config.model.width=256`.
Running the same command again resumes from the workdir's latest checkpoint; a larger
`train.steps` continues a finished run.
"""
from birdie_jax.config import default_config


def get_config(arg: str | None = None):
  """`arg`: None for the default run, 'tiny' for a smoke run."""
  config = default_config()
  config.train.steps = 400              # ~4 min on 2 CPU cores
  config.train.eval_every = 100         # validation loss every 100 steps
  config.checkpoint.every_steps = 200   # 3 checkpoints over the run
  if arg == "tiny":
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
    raise ValueError(f"unknown variant {arg!r} of configs/base.py (known: tiny)")
  return config
