"""Evaluate a run's latest checkpoint with EleutherAI's lm-evaluation-harness (`lm_eval` 0.4).

    python -m birdie_jax.lm_eval --workdir=workdirs/base --tasks=lambada_openai,hellaswag \
        [--layout=prefix|continuation] [--include_path=DIR] [--limit=N] [--batch_size=16] \
        [--num_fewshot=N] [--output=results.json]

or from Python, once this module is imported (importing it registers the model "birdie_jax"):

    import lm_eval
    import birdie_jax.lm_eval  # noqa: F401
    results = lm_eval.simple_evaluate(model="birdie_jax", tasks=["lambada_openai"],
                                      model_args="workdir=workdirs/base,layout=prefix")

Model arguments (`model_args`): `workdir` (required), `layout` (auto | prefix | continuation;
auto resolves as the run's `eval.layout` does: prefix for Birdie curricula and bidirectional
models, continuation for next-token prediction on a causal model), `batch_size` (rows of `seq_len`
positions per forward pass, default 16), `max_gen_toks` (256), `seq_len` (default: the run's
`eval.seq_len`, else `train.seq_len`), `paradigm` (the objective class whose paradigm token
starts a prefix-layout prompt; default the run's `eval.paradigm`, '' for none),
`unstack_layers` (see `trained_run.load_run`). How requests are tokenised, laid out, packed and
scored: `birdie_jax/evals/harness_model.py`.

The CLI prints lm-eval's results table and writes its results (without per-sample logs) to
`--output`. A bad flag, workdir, layout or task name ends in one line before the checkpoint is
read (tasks are looked up in `--include_path` alone when it has them all: indexing lm-eval's own
few thousand task files takes about ten seconds). Nothing is downloaded by the adapter; lm-eval's
own tasks fetch their datasets from the Hugging Face hub unless they are cached
(HF_DATASETS_OFFLINE=1 keeps it offline).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from absl import app, flags

# The PyPI package (absolute imports: this module's own name is birdie_jax.lm_eval).
import lm_eval
import lm_eval.models  # registers lm-eval's own models before ours (get_model fills an empty
                       # registry only)
from lm_eval.api.registry import model_registry, register_model
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable, make_table

from birdie_jax import cli
from birdie_jax.data import special_tokens
from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.errors import ConfigError
from birdie_jax.evals.harness_model import HarnessModel
from birdie_jax.evals.runner import layout_kind, settings_of
from birdie_jax.trained_run import load_config, load_run
from birdie_jax.workdir import as_path, write_atomic

NAME = "birdie_jax"  # the model's name in lm-eval's registry
LAYOUTS = ("auto", "prefix", "continuation")


def _positive_int(value: Any, what: str) -> int:
  """`value` (an int, or a string of one, as lm-eval's model_args give it) if positive."""
  try:
    number = int(str(value))
  except ValueError:
    number = 0
  cli.require(number >= 1 and not isinstance(value, bool),
              f"{what} must be a positive integer, got {value!r}")
  return number


def paradigm_id(config, tokenizer, name: str | None) -> int | None:
  """The paradigm token of objective class `name` (None: the run's `eval.paradigm`; '': none),
  if the run's curriculum trained paradigm tokens; ConfigError for a class it did not train."""
  curriculum = run_curriculum(config)
  trained = curriculum.classes if curriculum.append_prob is not None else ()
  explicit = name is not None
  name = settings_of(config).paradigm if name is None else name
  if not name:
    return None
  if name not in trained:
    cli.require(not explicit, f"paradigm {name!r}: the run's curriculum trained "
                f"{', '.join(trained) or 'no paradigm tokens'}")
    return None
  return tokenizer.special_id(special_tokens.PARADIGMS[name])


class BirdieJaxLM(HarnessModel):
  """The latest checkpoint of a birdie_jax run as an lm-eval model (registered as "birdie_jax")."""

  def __init__(self, workdir: str, layout: str = "auto", batch_size: Any = 16,
               max_gen_toks: Any = 256, seq_len: Any = 0, paradigm: str | None = None,
               unstack_layers: bool = False, device: str | None = None,
               max_batch_size: Any = None):
    # `device` and `max_batch_size` are lm-eval's generic arguments: JAX places the model on the
    # run's mesh, and batches are `batch_size` rows.
    del device, max_batch_size
    cli.require(layout in LAYOUTS, f"layout must be one of {LAYOUTS}, got {layout!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
    config = load_config(str(workdir))  # one line for a folder that is not a run, before loading
    kind = layout_kind(layout, config)
    seq_len = (_positive_int(seq_len, "seq_len") if seq_len not in (0, "0", None, "")
               else settings_of(config).seq_len or config.train.seq_len)
    run = load_run(str(workdir), config, unstack_layers=bool(unstack_layers))
    super().__init__(run.tokenizer, run.setup, run.params, layout=kind, seq_len=seq_len,
                     paradigm_id=paradigm_id(run.config, run.tokenizer, paradigm),
                     batch_size=batch_size, max_gen_toks=max_gen_toks)
    self.workdir = str(workdir)
    self.step = run.step

  def get_model_info(self) -> dict[str, Any]:
    """What lm-eval records in its results' config."""
    return {"workdir": self.workdir, "step": self.step, "layout": self.layout.kind,
            "seq_len": self.seq_len, "paradigm_id": self.paradigm_id}


if NAME not in model_registry:  # `python -m` runs this file as __main__ besides the import
  register_model(NAME)(BirdieJaxLM)


def task_manager(tasks: list[str], include_path: str = "") -> TaskManager:
  """A TaskManager that knows every name (or glob, or YAML file) in `tasks`: `include_path`'s
  alone when it holds them all, else with lm-eval's own; ConfigError naming an unknown task."""
  cli.require(bool(tasks), "--tasks names no task")
  if include_path:
    cli.require(as_path(include_path).is_dir(), f"--include_path {include_path} is not a folder")

  def unknown(manager: TaskManager) -> list[str]:
    return [t for t in tasks if not (manager.match_tasks([t]) or os.path.isfile(t))]

  if include_path:
    manager = TaskManager(include_path=include_path, include_defaults=False)
    if not unknown(manager):
      return manager
  manager = TaskManager(include_path=include_path or None)
  missing = unknown(manager)
  where = "lm-eval's tasks" + (f" or {include_path}" if include_path else "")
  if missing:
    raise ConfigError(f"unknown lm-eval task {missing[0]!r} (not in {where})")
  return manager


def evaluate_with_harness(workdir: str, tasks: list[str], *, layout: str = "auto",
                          include_path: str = "", limit: float | None = None,
                          batch_size: int = 16, num_fewshot: int | None = None,
                          **model_args) -> dict:
  """lm-eval's results of the run in `workdir` on `tasks` (names, globs or YAML files, looked up
  in `include_path` and lm-eval's own tasks). Everything is checked before the checkpoint is
  read: ConfigError in one line."""
  cli.require(layout in LAYOUTS, f"--layout must be one of {LAYOUTS}, got {layout!r}")
  load_config(workdir)  # a folder that is not a run stops here, before the task index
  manager = task_manager(tasks, include_path)
  model = BirdieJaxLM(workdir, layout=layout, batch_size=batch_size, **model_args)
  if limit is not None and limit >= 1:
    limit = int(limit)
  return lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=manager, limit=limit,
                                 num_fewshot=num_fewshot, log_samples=False)


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "the training run's directory", required=True)
  flags.DEFINE_list("tasks", None, "comma-separated lm-eval tasks (names, globs or YAML files)",
                    required=True)
  flags.DEFINE_enum("layout", "auto", LAYOUTS, "how requests are laid out (auto: as the run's "
                    "eval.layout; prefix: the context in the bidirectional prefix)")
  flags.DEFINE_string("include_path", "", "a folder of extra task YAML files")
  flags.DEFINE_float("limit", None, "examples per task (a fraction if < 1)", lower_bound=0)
  flags.DEFINE_integer("batch_size", 16, "rows per forward pass", lower_bound=1)
  flags.DEFINE_integer("num_fewshot", None, "few-shot examples (default: each task's)",
                       lower_bound=0)
  flags.DEFINE_string("output", "", "write lm-eval's results here (JSON)")


_PROGRAM = "birdie_jax.lm_eval"


def main(argv: list[str]) -> None:
  """Prints lm-eval's results table; a user error ends in one line on stderr, exit status 2."""
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  cli.quiet_logging()
  if not f["verbosity"].present:
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
  with cli.user_errors(_PROGRAM):
    results = evaluate_with_harness(f.workdir, f.tasks, layout=f.layout,
                                    include_path=f.include_path, limit=f.limit,
                                    batch_size=f.batch_size, num_fewshot=f.num_fewshot)
  print(make_table(results))
  if f.output:
    write_atomic(as_path(f.output), json.dumps(results, indent=2, default=handle_non_serializable))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
