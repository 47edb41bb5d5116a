"""Instruction tuning: `python -m birdie_jax.finetune --workdir=NEW --init_from=RUN --data=FILE`.

    python -m birdie_jax.data.instructions --out=workdirs/tiny.jsonl      # a tiny set to try
    python -m birdie_jax.finetune --workdir=workdirs/base-sft --init_from=workdirs/base \
        --data=workdirs/tiny.jsonl [--config.train.steps=300 --config.train.learning_rate=5e-4]

fine-tunes RUN's latest checkpoint on the records of FILE (JSON lines of {"prompt", "response"}
or {"messages": [...]}: format and chat template in `birdie_jax/data/sft_records.py`) into the
new workdir NEW, with the loss on the replies only (`birdie_jax/train/sft.py`). The config is
RUN's, with the fine-tuning schedule `train.sft.FINETUNE`; `--config.<key>=<value>` overrides a
key, and `--config=FILE[:arg]` gives a whole config instead (it must describe RUN's model,
curriculum and tokenizer). The same command resumes NEW after a stop; every fault behaves as in
`birdie_jax.main` (README: Faults). `respond(NEW, prompt)` answers a prompt with the fine-tuned
model, laid out as it was trained.

Multi-process runs take `birdie_jax.main`'s flags (`--num_processes`, `--process_id`,
`--coordinator_address`).
"""
from __future__ import annotations

import jax
from absl import app, flags
from ml_collections import config_flags

from birdie_jax import cli
from birdie_jax.data import special_tokens
from birdie_jax.data.sft_records import prompt_ids
from birdie_jax.models.decoding import generate
from birdie_jax.parallel import distributed
from birdie_jax.parallel.sharding import axis_rules
from birdie_jax.train import sft
from birdie_jax.trained_run import load_run

_PROGRAM = "birdie_jax.finetune"


def respond(workdir: str, prompt: str, *, max_new_tokens: int = 64, system: str = "") -> str:
  """The fine-tuned run's greedy reply to a one-turn `prompt` (template, layout and paradigm as
  in its training; generation stops at <eos>)."""
  run = load_run(workdir)
  tokenizer, setup = run.tokenizer, run.setup
  layout, paradigm = sft.prompt_layout(run.config, tokenizer)
  ids = prompt_ids(prompt, tokenizer, system)
  batch = layout.prompts([ids], paradigm, len(layout.inputs(ids, paradigm)) + 1)
  with jax.set_mesh(setup.mesh), axis_rules(setup.rules):
    tokens = generate(setup.model(run.params), batch, max_new_tokens=max_new_tokens,
                      rng=jax.random.key(0), eos_id=tokenizer.special_id(special_tokens.EOS),
                      pad_id=tokenizer.pad_id)
  return tokenizer.decode(jax.device_get(tokens)[0])


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file(
      "config", sft.__file__, "a whole config of RUN's model instead of RUN's config with the "
      "fine-tuning schedule; --config.<key>=<value> overrides either", lock_config=True)
  flags.DEFINE_string("workdir", None, "the new fine-tuning run's folder", required=True)
  flags.DEFINE_string("init_from", None, "the pre-trained run (a birdie_jax workdir)",
                      required=True)
  flags.DEFINE_string("data", None, "the JSONL file of fine-tuning records", required=True)
  flags.DEFINE_string("coordinator_address", None, "multi-process: HOST:PORT of process 0")
  flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
  flags.DEFINE_integer("process_id", None, "multi-process: this process's index")


def main(argv: list[str]) -> None:
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  given = cli.config_flag(_PROGRAM)
  cli.quiet_logging()
  with cli.user_errors(_PROGRAM, interrupted=cli.BEFORE_TRAINING):
    config = sft.finetune_config(
        f.init_from, f.data, base=given if f["config"].present else None,
        overrides=config_flags.get_override_values(f["config"]))
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    sft.finetune(config, f.workdir)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
