"""Objective competence on tiny trained runs: the numbers are the run's own per-configuration
validation losses (same rows), token accuracy and loss agree with a float64 numpy reading of the
model's logits, and `evaluate --tasks=objectives` writes its JSON, table and loss-curve plot."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from birdie_jax.data.pipeline import make_validation_sets
from birdie_jax.data.sources import load_documents
from birdie_jax.errors import ConfigError
from birdie_jax.evals import objectives_report
from birdie_jax.evals.objectives_eval import objective_competence, run_mixture, validation_recipe
from birdie_jax.evaluate import evaluate_objectives, split_objectives
from birdie_jax.objectives import registry
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.trained_run import load_run
from helpers import ROOT, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _metrics_at(workdir, step):
  row = {}
  for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8"):
    data = json.loads(line)
    if data["step"] == step:
      row.update(data)
  return row


def _competence(run):
  """`objective_competence` of a loaded run's checkpoint."""
  return objective_competence(run.config, run.tokenizer, run.setup, run.params, step=run.step)


@pytest.fixture(scope="module")
def birdie_run(tmp_path_factory):
  """A 2-step Birdie run (bidirectional Hawk, bytes, 96 configurations), controller evaluations
  at steps 1 and 2, a checkpoint at 2."""
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.train.steps = 2
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  config.controller.schedule_scale = 0.01
  config.controller.num_candidates = 256
  config.controller.train_steps = 50
  config.controller.hidden = 32
  path = str(tmp_path_factory.mktemp("birdie"))
  train_and_evaluate(config, path)
  run = load_run(path)
  return path, run, _competence(run)


def test_competence_is_the_runs_own_per_configuration_validation_loss(birdie_run):
  workdir, run, result = birdie_run
  logged = _metrics_at(workdir, 2)
  names = run_mixture(run.config, run.tokenizer).names
  assert result["step"] == 2 and list(result["configurations"]) == list(names)
  assert list(result["classes"]) == list(registry.CLASSES)  # all seven, in registry order
  for name, scores in result["configurations"].items():
    assert scores["loss"] == pytest.approx(logged[f"val_loss/{name}"], rel=1e-5)
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["tokens"] > 0
  for cls, scores in result["classes"].items():
    members = [n for n in names if n.startswith(cls + "/")]
    assert scores["configurations"] == len(members)
    assert scores["loss"] == pytest.approx(np.mean([logged[f"val_loss/{n}"] for n in members]),
                                           rel=1e-5)


def _log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_accuracy_and_loss_match_numpy_on_the_logits(birdie_run):
  _, run, result = birdie_run
  config = run.config
  shards = jax.device_count()  # the tests' mesh: all 8 devices on the data axis
  assert (result["seed"], result["rows"], result["batches"]) == (
      config.seed + 1, math.ceil(config.controller.val_rows / shards) * shards, 1)
  documents = load_documents(config.data.source, "validation",
                             val_fraction=config.data.val_fraction,
                             text_field=config.data.text_field)
  mixture = run_mixture(config, run.tokenizer)
  sets = make_validation_sets(documents, run.tokenizer, mixture, seq_len=config.train.seq_len,
                              batch_size=result["rows"], num_batches=1, seed=config.seed + 1,
                              gap=config.data.gap)
  params = jax.device_get(run.params)
  forward = jax.jit(lambda p, b: run.setup.model(p)(
      b["inputs"], segment_ids=b["segment_ids"], positions=b["positions"],
      prefix_mask=b["prefix_mask"]))
  one_per_class = {}
  for name in mixture.names:
    one_per_class.setdefault(name.split("/")[0], name)
  for name in one_per_class.values():
    batch = sets[name][0]
    logits = np.asarray(forward(params, batch), np.float64)
    mask = batch["loss_mask"].astype(np.float64)
    picked = np.take_along_axis(_log_softmax(logits), batch["targets"][..., None], -1)[..., 0]
    hits = (logits.argmax(-1) == batch["targets"]).astype(np.float64)
    scores = result["configurations"][name]
    assert scores["tokens"] == mask.sum()
    assert scores["accuracy"] == pytest.approx((hits * mask).sum() / mask.sum(), abs=1e-6)
    assert scores["loss"] == pytest.approx(-(picked * mask).sum() / mask.sum(), rel=1e-4)


def test_evaluate_objectives_writes_json_table_and_loss_curves(birdie_run):
  workdir, run, result = birdie_run
  written = evaluate_objectives(workdir, run=run)
  assert written == result  # the same rows give the same numbers
  folder = os.path.join(workdir, "objectives")
  with open(os.path.join(folder, "2.json"), encoding="utf-8") as f:
    assert json.load(f) == json.loads(json.dumps(result))
  table = open(os.path.join(folder, "2.md"), encoding="utf-8").read()
  for cls, scores in result["classes"].items():
    assert f"| {cls} | {scores['configurations']} | " in table
    assert f"| {scores['loss']:.3f} | {scores['accuracy']:.3f} |" in table
  assert os.path.getsize(os.path.join(folder, "2-losses.png")) > 10_000
  # The curves: each class's mean logged loss at both controller evaluations.
  metrics = objectives_report.read_metrics(workdir)
  configurations = {n: c["class"] for n, c in result["configurations"].items()}
  curves = objectives_report.class_loss_history(metrics, tuple(result["classes"]),
                                                configurations)
  for step in (1, 2):
    logged = _metrics_at(workdir, step)
    for cls, (steps, losses) in curves.items():
      keys = [k for k in logged if k.startswith(f"val_loss/{cls}/")]
      assert steps == [1, 2] and len(keys) == result["classes"][cls]["configurations"]
      assert losses[step - 1] == pytest.approx(np.mean([logged[k] for k in keys]))


@pytest.fixture(scope="module")
def ntp_run(tmp_path_factory):
  """configs/base.py:tiny (next-token prediction, 8 steps, validation loss at 4 and 8)."""
  config = tiny_config()
  config.checkpoint.async_save = False
  path = str(tmp_path_factory.mktemp("ntp"))
  train_and_evaluate(config, path)
  return path


def test_an_ntp_run_has_one_class_scored_on_its_own_validation_batches(ntp_run):
  run = load_run(ntp_run)
  result = _competence(run)
  assert list(result["classes"]) == ["next_token_prediction"]
  assert (result["seed"], result["rows"], result["batches"]) == (
      run.config.seed, run.config.train.batch_size, run.config.train.eval_batches)
  assert result["classes"]["next_token_prediction"]["loss"] == pytest.approx(
      _metrics_at(ntp_run, 8)["val_loss"], rel=1e-5)
  ntp = "next_token_prediction"
  curves = objectives_report.class_loss_history(objectives_report.read_metrics(ntp_run), (ntp,),
                                                {f"{ntp}/fill": ntp})
  assert list(curves) == ["next_token_prediction"] and curves["next_token_prediction"][0] == [4, 8]


def test_objective_rows_must_split_over_the_mesh(ntp_run):
  run = load_run(ntp_run)
  config, mesh = run.config, run.setup.mesh
  assert validation_recipe(config, mesh, rows=16, batches=3) == {
      "seed": config.seed, "rows": 16, "batches": 3}
  shards = jax.device_count()  # the data axis spans the tests' 8 devices
  with pytest.raises(ConfigError, match=rf"objective rows \({shards + 4}\) must be a multiple "
                                        rf"of {shards} \(the mesh's data x fsdp size"):
    validation_recipe(config, mesh, rows=shards + 4)


def test_split_objectives():
  assert split_objectives("objectives, copying,mqar") == (True, "copying,mqar")
  assert split_objectives("objectives") == (True, "")
  assert split_objectives("phonebook") == (False, "phonebook")
  assert split_objectives("") == (False, "")


def test_evaluate_cli_objectives(ntp_run):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  result = subprocess.run([sys.executable, "-m", "birdie_jax.evaluate", f"--workdir={ntp_run}",
                           "--tasks=objectives"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith("## Objective competence at step 8")
  assert "| next_token_prediction | 1 | " in result.stdout and "## Evaluation" not in result.stdout
  assert os.path.exists(os.path.join(ntp_run, "objectives", "8-losses.png"))
