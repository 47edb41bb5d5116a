"""Held-out perplexity of a study run on Gutenberg val and WikiText-2 test (`heldout.json`).

    python -m experiments.study.heldout --workdir=workdirs/study/hawk-50m-birdie-s0 [--batches=16]

Each file's documents are packed into rows of the run's length exactly as the run's next-token
objective packs them (a Birdie curriculum's `next_token_prediction` configuration, paradigm token
included; ul2, which has none, and ntp: plain next-token rows) with the same seed for every arm,
and scored as the training loop's validation loss (mean nats per target token). The files come
from the study's corpus folder (`$BIRDIE_STUDY_CORPUS`, see config.py); writes
`<workdir>/heldout.json`: {file stem: {loss, perplexity, tokens}}.
"""
from __future__ import annotations

import json
import math
import os

from absl import app, flags
import jax

from birdie_jax import cli
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.file_source import open_files
from birdie_jax.data.pipeline import make_validation_batches
from birdie_jax.models.forward import make_eval_step, mean_eval_loss
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.trained_run import TrainedRun, load_run
from birdie_jax.workdir import check_writable, write_atomic
from experiments.study.config import corpus_dir

FILES = ("gutenberg_val.jsonl.zst", "wikitext2_test.jsonl.zst")
NTP_CONFIGURATION = "next_token_prediction/fill"


def _next_token(run: TrainedRun):
  """The run's own next-token objective (None: the plain one)."""
  config = run.config
  mixture = make_mixture(run.tokenizer, curriculum=config.curriculum, seq_len=config.train.seq_len,
                         length_scale=config.data.length_scale)
  return mixture.only(NTP_CONFIGURATION) if NTP_CONFIGURATION in mixture.names else None


def heldout_loss(run: TrainedRun, source: str, *, batches: int, batch_size: int) -> dict:
  """{loss, perplexity, tokens} of `run` on `batches` x `batch_size` rows of `source`."""
  texts, _ = open_files(source, run.config.data.text_field)
  extra = {} if (objective := _next_token(run)) is None else {"make_example": objective}
  rows = make_validation_batches(texts, run.tokenizer, seq_len=run.config.train.seq_len,
                                 batch_size=batch_size, num_batches=batches, seed=0,
                                 gap=run.config.data.gap, **extra)
  mesh, rules = run.setup.mesh, run.setup.rules
  placed = [{k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
             for k, v in row.items()} for row in rows]
  with jax.set_mesh(mesh):
    loss = mean_eval_loss(make_eval_step(run.setup), run.params, placed)
  tokens = float(sum(row["loss_mask"].sum() for row in rows))
  return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens}


def write_heldout(workdir: str, *, batches: int = 16, batch_size: int = 8,
                  files=FILES, run: TrainedRun | None = None) -> dict:
  """Scores every file of `files` (in the corpus folder) and writes `<workdir>/heldout.json`."""
  run = run or load_run(workdir)
  out = {name.split(".")[0]: heldout_loss(run, os.path.join(corpus_dir(), name), batches=batches,
                                          batch_size=batch_size) for name in files}
  write_atomic(os.path.join(workdir, "heldout.json"), json.dumps(out, indent=1))
  return out


_PROGRAM = "experiments.study.heldout"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "the study run's workdir", required=True)
  flags.DEFINE_integer("batches", 16, "batches of rows per file", lower_bound=1)
  flags.DEFINE_integer("batch_size", 8, "rows per batch", lower_bound=1)


def main(argv: list[str]) -> None:
  """Prints the held-out losses as JSON; user errors end in one line, exit status 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  with cli.user_errors(_PROGRAM):
    check_writable(f.workdir, hint="heldout.json goes there")
    print(json.dumps(write_heldout(f.workdir, batches=f.batches, batch_size=f.batch_size)))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
