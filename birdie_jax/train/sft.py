"""Instruction tuning: a pre-trained run fine-tuned on (prompt, response) or chat records, by the
pre-training loop itself (`loop.train_and_evaluate` with this module's inputs).

    config = finetune_config("workdirs/base", "instructions.jsonl")   # RUN's config, SFT schedule
    metrics = finetune(config, "workdirs/base-sft")

The run. Its config is RUN's (`config.json`): the same model, curriculum and tokenizer, which a
given config (`base`) or override may not change (one line naming the keys); its `train`, `eval`
and `checkpoint` groups start from `FINETUNE` (200 steps at 1e-3 with 20 warm-up steps and no
weight decay, validation every 50 steps, a checkpoint every 100, no retrieval evaluations), and
any key may be overridden. Its inputs (`SFTInputs`): RUN's pinned tokenizer, copied into the new
workdir at its first start (run.json pins it there as pre-training does); the records of
`sft.data` (`data/sft_records.py`: format, chat template) as packed batches and a fixed
validation split (`train/sft_data.py`: layout, packing, split); and, at a first start, RUN's
latest params with a fresh optimizer state at step 0. Everything else is pre-training's:
checkpoints and exact resume, metrics.jsonl (loss, val_loss, padding_fraction, ...), the workdir
lock, SIGTERM/SIGINT stops, non-finite guards, rollbacks.

The workdir's `sft.json` pins what the fine-tuning is (RUN's path, the data file's path and
sha256, the split, layout, paradigm and template): a restart with another one stops in one line,
and a workdir that holds a run but no sft.json (a pre-training run) is refused. A resume needs
RUN's config.json (the config is rebuilt from it), not its checkpoints.

Bad input stops before anything compiles, in one line: RUN without config.json or a checkpoint,
--workdir equal to RUN, a config of another model or tokenizer (or with `train.init_from`, which
starts pre-training from a RecurrentGemma checkpoint), an unreadable data file, a record without
the fields, with an empty response or an unknown role.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from birdie_jax.config import default_config
from birdie_jax.console import log_progress
from birdie_jax.data import special_tokens
from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.data.lookahead import Lookahead
from birdie_jax.data.sft_records import CHAT_TEMPLATE, read_records, validate_settings
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.data.tokenizer_pin import legacy_tokenizer, load_pinned
from birdie_jax.errors import ConfigError
from birdie_jax.evals.layout import Layout
from birdie_jax.evals.runner import layout_kind
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.actions import ValidationLoss
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.identity import MODEL_KEYS, Resume, describe, differences, identity
from birdie_jax.train.identity import read_record
from birdie_jax.train.loop import Inputs, train_and_evaluate
from birdie_jax.train.sft_data import SFTData
from birdie_jax.train.state import TrainSetup, TrainState, init_train_state
from birdie_jax.workdir import as_path, write_atomic

SFT_FILE = "sft.json"
# A fine-tune's own schedule over RUN's config (any key may still be overridden).
FINETUNE = {"train.steps": 200, "train.learning_rate": 1e-3, "train.warmup_steps": 20,
            "train.weight_decay": 0.0, "train.eval_every": 50, "checkpoint.every_steps": 100,
            "eval.every": 0, "train.init_from": ""}
# What the fine-tune must share with RUN: the params' meaning and the layout it was trained on.
PINNED_KEYS = ("curriculum", *MODEL_KEYS, "data.tokenizer.kind", "data.tokenizer.vocab_size",
               "data.tokenizer.model_path")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`finetune`'s default --config: the defaults with `FINETUNE` (only the keys the command line
  overrides are taken from it; the rest comes from RUN)."""
  del arg
  config = default_config()
  config.update_from_flattened_dict(FINETUNE)
  return config


def run_config(run: str) -> ml_collections.ConfigDict:
  """RUN's config: its config.json over the defaults."""
  path = as_path(run) / "config.json"
  try:
    saved = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path} ({getattr(e, 'strerror', None) or e}): is "
                      "--init_from a training run?") from None
  config = default_config()
  config.update(saved)
  return config


def latest_checkpoint(run: str) -> int:
  """The step of RUN's newest complete checkpoint; ConfigError if it has none."""
  directory = as_path(run) / "checkpoints"
  if not directory.is_dir():
    raise ConfigError(f"{run} has no checkpoint to fine-tune from ({directory} is missing)")
  checkpointer = Checkpointer(str(directory), max_to_keep=1, async_save=False)
  try:
    step = checkpointer.latest_step()
  finally:
    checkpointer.close()
  if step is None:
    raise ConfigError(f"{run} has no checkpoint to fine-tune from ({directory} holds none "
                      "complete): train it first")
  return step


def finetune_config(run: str, data: str, *, base: ml_collections.ConfigDict | None = None,
                    overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The fine-tuning config: RUN's with `FINETUNE` (or `base`, a whole config of the same model),
  then `overrides` ('train.steps': 50, ...); `sft.init_from` and `sft.data` set.

  Raises:
    ConfigError: RUN has no config.json or checkpoint, or the result describes another model,
      curriculum or tokenizer than RUN's.
  """
  source = run_config(run)
  latest_checkpoint(run)
  if base is None:
    config = ml_collections.ConfigDict(source.to_dict())
    config.update_from_flattened_dict(FINETUNE)
  else:
    config = ml_collections.ConfigDict(base.to_dict())
  if overrides:
    config.update_from_flattened_dict(overrides)
  config.sft.init_from, config.sft.data = run, data
  if config.train.init_from:
    raise ConfigError(f"train.init_from ({config.train.init_from}) starts a pre-training run from "
                      "a RecurrentGemma checkpoint; a fine-tune starts from --init_from's run")
  record = read_record(run)
  pinned = identity(source) if record is None else dict(identity(source), **record["identity"])
  changes = differences(pinned, identity(config), PINNED_KEYS)
  if changes:
    raise ConfigError(f"a fine-tune uses the model, curriculum and tokenizer of the run it starts "
                      f"from ({run}): {describe(changes)}")
  return config


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Fine-tunes (or resumes fine-tuning) into `workdir`; the final metrics, as
  `train_and_evaluate`."""
  validate_settings(config.sft)
  if not config.sft.init_from or not config.sft.data:
    raise ConfigError("sft.init_from and sft.data must name the run to start from and the records")
  if os.path.abspath(workdir) == os.path.abspath(config.sft.init_from):
    raise ConfigError(f"--workdir must be a new folder, not the run fine-tuned from ({workdir})")
  return train_and_evaluate(config, workdir, make_inputs=SFTInputs())


def prompt_layout(config: ml_collections.ConfigDict,
                  tokenizer: Tokenizer) -> tuple[Layout, int | None]:
  """Where a fine-tune's prompts sit (`sft.layout`, resolved as `eval.layout`) and the paradigm
  token that starts a prefix-layout prompt, if the curriculum trained one (`sft.paradigm`; as
  the evaluations' `Evaluator.paradigm_id`), else None."""
  kind = layout_kind(config.sft.layout, config)
  layout = Layout(kind, begin_id=tokenizer.special_id(special_tokens.BEGIN),
                  pad_id=tokenizer.pad_id)
  curriculum = run_curriculum(config)
  name = config.sft.paradigm
  if kind != "prefix" or curriculum.append_prob is None or name not in curriculum.classes:
    return layout, None
  return layout, tokenizer.special_id(special_tokens.PARADIGMS[name])


def sha256_file(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class SFTInputs:
  """`loop.MakeInputs` for instruction tuning (see the module docstring)."""

  def __call__(self, config: ml_collections.ConfigDict, resume: Resume, mesh: Mesh,
               rules: tuple) -> Inputs:
    settings = config.sft
    if resume.record is not None and not (as_path(resume.workdir) / SFT_FILE).exists():
      raise ConfigError(f"{resume.workdir} holds a run that is not a fine-tune (no {SFT_FILE}): "
                        "use a new --workdir")
    tokenizer = self._tokenizer(config, resume)
    conversations = read_records(settings.data)
    layout, paradigm = prompt_layout(config, tokenizer)
    kind = layout.kind
    data = SFTData.build(conversations, tokenizer, layout, paradigm,
                         seq_len=config.train.seq_len, val_fraction=settings.val_fraction,
                         seed=config.seed, source=settings.data)
    _pin(resume, {"init_from": os.path.abspath(settings.init_from),
                  "data": os.path.abspath(settings.data), "data_sha256": sha256_file(settings.data),
                  "records": len(conversations), "val_fraction": settings.val_fraction,
                  "layout": kind, "paradigm": settings.paradigm if paradigm is not None else "",
                  "template": CHAT_TEMPLATE})
    pi, pc = jax.process_index(), jax.process_count()
    local = config.train.batch_size // pc
    dataset = data.train_dataset(batch_size=local, seed=config.seed, process_index=pi,
                                 process_count=pc)
    val_batches = [{k: jax.make_array_from_process_local_data(
        batch_sharding(mesh, rules, v.ndim), v) for k, v in b.items()}
        for b in data.validation_batches(batch_size=local, process_index=pi, process_count=pc)]
    every, total = config.train.eval_every, config.train.steps
    prompt = f"{kind} layout" + (f", {special_tokens.PARADIGMS[settings.paradigm]} first"
                                 if paradigm is not None else "")
    log_progress(f"fine-tuning data {settings.data}: {len(data.train)} training and "
                 f"{len(data.val)} validation records (in {len(val_batches)} batches of "
                 f"{config.train.batch_size} rows) | "
                 f"prompt in the {prompt}")
    return Inputs(
        tokenizer=tokenizer, data_iter=Lookahead(iter(dataset), retries=config.data.read_retries),
        validation=lambda eval_step, guard: ValidationLoss(eval_step, val_batches, every=every,
                                                           total=total, guard=guard),
        init_state=lambda setup: init_from_run(config, setup, tokenizer.vocab_size))

  @staticmethod
  def _tokenizer(config: ml_collections.ConfigDict, resume: Resume) -> Tokenizer:
    """The fine-tune's pinned tokenizer on a resume; RUN's pinned one at the first start (which
    `record_start` then pins in the new workdir)."""
    if resume.record is not None:
      return load_pinned(resume.record["tokenizer"], resume.workdir)
    run = config.sft.init_from
    record = read_record(run)
    if record is not None:
      return load_pinned(record["tokenizer"], run)
    data = config.data  # a run from before tokenizer pinning
    return legacy_tokenizer(data, lambda: load_documents(
        data.source, "train", val_fraction=data.val_fraction, text_field=data.text_field,
        document_separator=data.document_separator), run)


def _pin(resume: Resume, entry: dict[str, Any]) -> None:
  """Writes sft.json at a first start (process 0); on a resume, ConfigError if `entry` differs
  from it in anything."""
  path = as_path(resume.workdir) / SFT_FILE
  if resume.record is None:
    if jax.process_index() == 0:
      write_atomic(path, json.dumps(entry, indent=2))
    return
  try:
    pinned = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
  changed = [f"{k} {pinned.get(k)!r} (run) != {v!r} (now)" for k, v in entry.items()
             if k != "records" and pinned.get(k) != v]
  if changed:
    raise ConfigError(f"{resume.workdir} fine-tunes something else: {', '.join(changed)}; "
                      "use a new --workdir")


def init_from_run(config: ml_collections.ConfigDict, setup: TrainSetup,
                  vocab_size: int) -> TrainState:
  """Step 0 of a fine-tune: RUN's latest params, a fresh optimizer state."""
  run = config.sft.init_from
  step = latest_checkpoint(run)
  checkpointer = Checkpointer(os.path.join(run, "checkpoints"), max_to_keep=1, async_save=False)
  try:
    params = checkpointer.restore_params(step, setup)
  finally:
    checkpointer.close()
  log_progress(f"fine-tuning from {run} checkpoint {step} (fresh optimizer state)")
  return init_train_state(config, setup, vocab_size, params)
