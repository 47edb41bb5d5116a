"""A control for the phonebook protocol: can its fine-tuning teach retrieval at all, from scratch?

    python -m experiments.phonebook_probe --workdir=workdirs/probe [--family=transformer] \
        [--width=128] [--depth=2] [--seq_len=256] [--numbers=2] [--steps=1500] \
        [--learning_rate=1e-3]

Builds a randomly initialised model (bytes tokenizer, no pre-training) and trains it on phonebook
examples alone with `birdie_jax.train.finetune`: the packing, prompt layout and target-only loss
that `reproduce_paper` fine-tunes its arms with. Then it evaluates the phonebook at the same
context. With the bytes tokenizer, an answer line costs about 1.70 nats per byte to a model that
knows the format but guesses the digits; a loss below that, and digit accuracy above 10%, mean the
protocol teaches retrieval, so an arm that stays at chance lacks scale or steps, not a working
pipeline. Writes `<workdir>/eval/<steps>.json` (with its table) and `<workdir>/losses.json`.
"""
from __future__ import annotations

import json
import os

from absl import app, flags

from birdie_jax import cli
from birdie_jax.config import FAMILIES, default_config, validate_config
from birdie_jax.data.tokenizer import build_tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals import settings as eval_settings
from birdie_jax.evals.report import Report
from birdie_jax.evals.runner import Evaluator
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.finetune import finetune
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.workdir import check_writable


def probe(workdir: str, *, family: str = "transformer", width: int = 128, depth: int = 2,
          seq_len: int = 256, numbers: int = 2, steps: int = 1500, learning_rate: float = 1e-3,
          batch_size: int = 16, examples: int = 32, seed: int = 0) -> Report:
  """Trains a fresh model on the phonebook alone and returns its phonebook report (also written
  under `workdir`)."""
  sizes = dict(width=width, depth=depth, seq_len=seq_len, numbers=numbers, steps=steps,
               batch_size=batch_size, examples=examples)
  for name, value in sizes.items():
    if value < 1:
      raise ConfigError(f"--{name} must be at least 1, got {value}")
  cli.require(learning_rate > 0, f"--learning_rate must be positive, got {learning_rate:g}")
  config = default_config()
  config.seed = seed
  config.curriculum = "ntp"
  config.data.tokenizer.kind = "bytes"
  config.train.seq_len = seq_len
  config.model.family = family
  config.model.update(width=width, depth=depth, lru_width=width, num_heads=max(width // 32, 1),
                      num_kv_heads=max(width // 32, 1), head_dim=32)
  validate_config(config)
  check_writable(workdir)
  tokenizer = build_tokenizer(config.data, [], cache_dir=workdir)
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  params = init_train_state(config, setup, tokenizer.vocab_size).params
  settings = eval_settings.default_settings()
  settings.update(tasks="phonebook", examples=examples, batch_size=batch_size, seq_len=seq_len)
  evaluator = Evaluator(config, tokenizer, setup, settings=settings)
  params, losses = finetune(evaluator, config, params, task_names=["phonebook"], steps=steps,
                            batch_size=batch_size, learning_rate=learning_rate, seed=seed + 1,
                            difficulties={"phonebook": range(1, numbers + 1)})
  report = evaluator.run(params, step=steps)
  report.write(os.path.join(workdir, "eval"))
  with open(os.path.join(workdir, "losses.json"), "w", encoding="utf-8") as f:
    json.dump([[int(s), float(v)] for s, v in losses], f)
  return report


_PROGRAM = "experiments.phonebook_probe"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", "workdirs/probe", "where the report and losses go")
  flags.DEFINE_enum("family", "transformer", FAMILIES, "model family")
  flags.DEFINE_integer("width", 128, "model width", lower_bound=1)
  flags.DEFINE_integer("depth", 2, "blocks", lower_bound=1)
  flags.DEFINE_integer("seq_len", 256, "context of the training rows and the evaluation",
                       lower_bound=1)
  flags.DEFINE_integer("numbers", 2, "numbers asked per training example, drawn from 1..this",
                       lower_bound=1)
  flags.DEFINE_integer("steps", 1500, "training steps", lower_bound=1)
  flags.DEFINE_float("learning_rate", 1e-3, "constant learning rate (> 0)")


def main(argv: list[str]) -> None:
  """Runs `probe` with the flags and prints the table; user errors end in one line, exit 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  cli.quiet_logging()
  with cli.user_errors(_PROGRAM):
    report = probe(f.workdir, family=f.family, width=f.width, depth=f.depth, seq_len=f.seq_len,
                   numbers=f.numbers, steps=f.steps, learning_rate=f.learning_rate)
  print(report.markdown(), end="")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
