"""Instruction tuning end to end: a tiny Birdie run (one bidirectional Hawk block, UL2, 8 steps)
fine-tuned on the tiny instruction set lowers its validation loss, pins what it is, resumes
exactly after a stop, and refuses bad input in one line before anything compiles.

The pre-training run uses the fine-tune's schedule and shapes, so both compile to the same train
and eval steps (one compile, then the suite's compilation cache)."""
import json
import shutil

import jax
import numpy as np
import pytest

from birdie_jax.data.instructions import tiny_instructions, write_jsonl
from birdie_jax.data.sft_records import encode, read_records, to_conversation
from birdie_jax.errors import ConfigError
from birdie_jax.models.forward import make_eval_step
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.train.sft import FINETUNE, finetune, finetune_config, prompt_layout
from birdie_jax.train.sft_data import SFTData
from birdie_jax.trained_run import load_run
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")

SCHEDULE = {"train.steps": 8, "train.batch_size": 8, "train.seq_len": 256,
            "train.learning_rate": 3e-3, "train.warmup_steps": 2, "train.eval_every": 4,
            "train.log_every": 1, "checkpoint.every_steps": 4}


def _rows(workdir) -> dict[int, dict]:
  rows = {}
  for line in (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
    row = json.loads(line)
    rows.setdefault(row["step"], {}).update(row)
  return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sft")
  data = root / "tiny.jsonl"
  write_jsonl(tiny_instructions(160), data)
  pre = tiny_config()  # one block (bidirectional): a third of the time of two
  pre.curriculum, pre.model.bidirectional, pre.model.depth = "ul2", True, 1
  pre.checkpoint.async_save = False
  pre.update_from_flattened_dict({**FINETUNE, **SCHEDULE, "train.eval_every": 8,
                                  "checkpoint.every_steps": 8})
  train_and_evaluate(pre, str(root / "run"))
  config = finetune_config(str(root / "run"), str(data), overrides=SCHEDULE)
  finetune(config, str(root / "sft"))
  return root, config


def test_finetune_lowers_validation_loss_and_pins_the_run(runs):
  root, config = runs
  rows = _rows(root / "sft")
  val = {s: r["val_loss"] for s, r in rows.items() if "val_loss" in r}
  assert sorted(val) == [4, 8] and val[8] < val[4] - 0.1
  assert {"loss", "learning_rate", "padding_fraction", "target_tokens"} <= set(rows[8])
  pinned = json.loads((root / "sft" / "sft.json").read_text())
  assert pinned["layout"] == "prefix" and pinned["paradigm"] == "prefix_lm"
  assert pinned["records"] == 160 and pinned["template"] == "chat-v1"
  run_json = json.loads((root / "sft" / "run.json").read_text())
  assert run_json["tokenizer"] == json.loads((root / "run" / "run.json").read_text())["tokenizer"]
  assert run_json["identity"]["model.bidirectional"] and config.train.weight_decay == 0.0


def test_finetune_starts_from_the_runs_params_and_trains_replies_only(runs):
  root, config = runs
  base, tuned = load_run(str(root / "run")), load_run(str(root / "sft"))
  assert tuned.step == 8 and base.step == 8
  layout, paradigm = prompt_layout(tuned.config, tuned.tokenizer)
  # The training loop's own eval step (compiled once for the whole file).
  eval_step = make_eval_step(base.setup)

  def loss(params, batch) -> tuple[float, float]:
    with jax.set_mesh(base.setup.mesh):
      out = jax.device_get(eval_step(params, {k: jax.make_array_from_process_local_data(
          batch_sharding(base.setup.mesh, base.setup.rules, 2), v) for k, v in batch.items()}))
    return float(out["loss_sum"]), float(out["count"])

  # Step 1 trained the run's own params: its logged loss is theirs on the first batch.
  data = SFTData.build(read_records(config.sft.data), tuned.tokenizer, layout, paradigm,
                       seq_len=256, val_fraction=config.sft.val_fraction, seed=config.seed)
  total, count = loss(base.params, next(iter(data.train_dataset(batch_size=8, seed=config.seed))))
  np.testing.assert_allclose(_rows(root / "sft")[1]["loss"], total / count, rtol=1e-5)
  # Only reply tokens count; the prompt changes the loss through the context alone.
  example = encode(to_conversation(tiny_instructions(1)[0]), tuned.tokenizer)
  row = layout.pack([layout.segment(example.prompt, example.target, paradigm, example.scored)],
                    256)
  batch = {k: np.repeat(v, 8, axis=0) for k, v in row.items()}
  prompt = slice(1, len(example.prompt) + 1)  # after the paradigm token
  retargeted = {**batch, "targets": batch["targets"].copy()}
  retargeted["targets"][:, prompt] = 7
  reprompted = {**batch, "inputs": batch["inputs"].copy()}
  reprompted["inputs"][:, prompt.start + 2] = tuned.tokenizer.encode("Z")[0]
  (total, count), (same, _), (other, _) = (loss(tuned.params, b)
                                           for b in (batch, retargeted, reprompted))
  assert count == 8 * example.scored.sum() == 8 * (len(tiny_instructions(1)[0]["response"]) + 1)
  assert same == total and other != total


def test_finetune_resumes_exactly_after_a_stop(runs):
  root, config = runs
  straight = _rows(root / "sft")
  stopped = root / "sft-stopped"
  shutil.copytree(root / "sft", stopped)
  # A run killed after its step-4 checkpoint: the later checkpoint and rows are gone.
  shutil.rmtree(stopped / "checkpoints" / "8")
  (stopped / "metrics.jsonl").unlink()
  finetune(config, str(stopped))
  resumed = _rows(stopped)
  assert min(resumed) == 5
  for step in range(5, 9):
    assert resumed[step]["loss"] == straight[step]["loss"]
  assert resumed[8]["val_loss"] == straight[8]["val_loss"]


def test_bad_input_stops_in_one_line(runs, tmp_path):
  root, config = runs
  run, data = str(root / "run"), config.sft.data

  def message(fn) -> str:
    with pytest.raises(ConfigError) as error:
      fn()
    assert "\n" not in str(error.value)
    return str(error.value)

  bare = tmp_path / "bare"
  bare.mkdir()
  assert "bare/config.json" in message(lambda: finetune_config(str(bare), data))
  shutil.copy(root / "run" / "config.json", bare)
  assert "has no checkpoint to fine-tune from" in message(lambda: finetune_config(str(bare), data))
  assert "model.width 32 (run) != 48 (config)" in message(
      lambda: finetune_config(run, data, overrides={**SCHEDULE, "model.width": 48}))
  assert "--workdir must be a new folder" in message(lambda: finetune(config, run))
  # A resume on other data, and a workdir that holds a pre-training run.
  other = tmp_path / "other.jsonl"
  write_jsonl(tiny_instructions(50, seed=2), other)
  changed = finetune_config(run, str(other), overrides=SCHEDULE)
  assert "fine-tunes something else: data " in message(lambda: finetune(changed, str(root / "sft")))
  pretraining = tmp_path / "pretraining"
  pretraining.mkdir()
  for name in ("run.json", "config.json"):
    shutil.copy(root / "run" / name, pretraining)
  assert "not a fine-tune (no sft.json)" in message(lambda: finetune(config, str(pretraining)))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a", "response": ""}\n', encoding="utf-8")
  assert "line 1: empty response" in message(
      lambda: finetune(finetune_config(run, str(bad), overrides=SCHEDULE), str(tmp_path / "new")))
