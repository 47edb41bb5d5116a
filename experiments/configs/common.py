"""What the arms of `experiments/reproduce_paper.py` share: model shapes, token budget, evaluation
and fine-tuning settings.

Two scales, chosen by the config argument:
  None    one GPU: about 6.8M parameters, 16 x 2048 tokens per step, 600 steps (20M tokens, about
          15 epochs of the embedded Shakespeare), bfloat16. On one H100 all seven arms run at once
          (`--parallel=7`) in about 4 minutes of pre-training (measured for 1,200 steps: 140-410 s
          per arm, 2026-11-25). The first run trained 1,200 steps (30 epochs) and fine-tuned 300:
          the next-token arms overfit (Hawk's validation loss rose from 3.9 to 7.6) and no arm,
          Transformers included, learned the phonebook (`experiments/results_v1/`).
  'tiny'  a CPU smoke run of a few steps on bytes (tests, CI).
The paper trains 1.4B models on 32B Pile tokens at 2048-token rows and evaluates the phonebook at
16,384 tokens after fine-tuning there; we keep its row length for pre-training and evaluate and
fine-tune at the same length.
"""
from __future__ import annotations

import ml_collections

from birdie_jax.config import default_config
from birdie_jax.evals import settings as eval_settings

ARG_TINY = "tiny"


def arm_config(family: str, curriculum: str, bidirectional: bool,
               arg: str | None = None) -> ml_collections.ConfigDict:
  """The training config of one arm at the scale `arg` names (None: one GPU, 'tiny': CPU)."""
  if arg not in (None, ARG_TINY):
    raise ValueError(f"unknown variant {arg!r} (known: {ARG_TINY})")
  config = default_config()
  config.curriculum = curriculum
  config.model.family = family
  config.model.bidirectional = bidirectional
  if arg == ARG_TINY:
    config.model.preset = "tiny"
    config.data.tokenizer.kind = "bytes"
    config.train.steps = 4
    config.train.batch_size = 8
    config.train.seq_len = 256
    config.train.warmup_steps = 1
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.eval_batches = 1
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = False
    config.controller.num_candidates = 16
    config.controller.train_steps = 2
    config.controller.hidden = 16
    config.controller.layers = 1
    return config
  config.model.width = 256
  config.model.depth = 6
  config.model.lru_width = 384
  config.model.num_heads = 4
  config.model.num_kv_heads = 4
  config.model.head_dim = 64
  config.model.mlp_expansion = 3.0
  config.model.dtype = "bfloat16"
  config.train.steps = 600
  config.train.batch_size = 16
  config.train.seq_len = 2048
  config.train.warmup_steps = 100
  config.train.log_every = 50
  config.train.eval_every = 100
  config.checkpoint.every_steps = 200
  return config


def eval_settings_for(arg: str | None) -> ml_collections.ConfigDict:
  """The evaluation every arm gets, zero-shot and after fine-tuning (all tasks)."""
  settings = eval_settings.default_settings()
  if arg == ARG_TINY:
    settings.examples = 2
    settings.batch_size = 8
    settings.seq_len = 512
  else:
    settings.examples = 64
    settings.batch_size = 32
    settings.seq_len = 2048
  return settings


def finetune_settings(arg: str | None) -> ml_collections.ConfigDict:
  """Paper A.9 scaled: phonebook examples of 1-32 numbers, constant LR, no weight decay.

  A.9: 1,000 steps of 64 x 16,384 tokens at 5e-5, a quarter of the 1.4B models' pre-training
  peak (2e-4); here the same 1,000 steps, of 16 x 2048 tokens, at a quarter of our peak (3e-3).
  (300 steps, the first run's, left even the Transformers at chance; a randomly initialised
  2-layer Transformer on this CPU needs about 200 steps before its phonebook loss leaves the
  floor of guessing the digits.)
  """
  c = ml_collections.ConfigDict()
  c.tasks = "phonebook"        # tasks whose training examples are mixed (taking turns)
  c.numbers = 32               # phonebook: numbers asked per example drawn from 1..this
  c.steps = 2 if arg == ARG_TINY else 1000
  c.batch_size = 8 if arg == ARG_TINY else 16
  c.learning_rate = 3e-3 / 4   # constant; weight decay 0
  c.seed = 1
  return c
