"""The evaluator on real models: the `eval` settings' validation, prompts in the run's layout with
its paradigm tokens, and `evaluate` on a tiny trained checkpoint writing every task's results."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals import settings as eval_settings
from birdie_jax.evals import tasks
from birdie_jax.evals.report import read_report
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evaluate import evaluate_run
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.finetune import training_batches
from birdie_jax.train.loop import train_and_evaluate
from birdie_jax.train.state import init_train_state, make_train_setup
from helpers import ROOT, tiny_config
from experiments import reproduce_paper
from experiments.configs import common
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _settings(**overrides):
  """The reproduction's tiny evaluation settings, one example per difficulty."""
  settings = common.eval_settings_for(common.ARG_TINY)
  settings.update({"examples": 1, **overrides})
  return settings


@pytest.mark.parametrize("key, value, message", [
    ("tasks", "phonebook,nope", "unknown eval task 'nope'; the tasks are phonebook, mqar"),
    ("tasks", "mqar, mqar", "eval tasks 'mqar, mqar' name a task twice"),
    ("tasks", " , ", "eval tasks ' , ' name no task"),
    ("every", -1, "eval.every must be an integer >= 0, got -1"),
    ("examples", 0, "eval.examples must be an integer >= 1, got 0"),
    ("layout", "bidirectional", "eval.layout must be one of ('auto', 'prefix', 'continuation')"),
    ("paradigm", "ntp", "eval.paradigm must be '' or one of ('next_token_prediction',"),
])
def test_bad_settings_are_one_clear_line(key, value, message):
  settings = eval_settings.default_settings()
  settings[key] = value
  with pytest.raises(ConfigError) as raised:
    eval_settings.validate_settings(settings)
  assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_default_settings_are_valid_and_unknown_keys_are_refused():
  settings = eval_settings.default_settings()
  eval_settings.validate_settings(settings)
  assert tasks.parse_names(settings.tasks) == tasks.NAMES
  settings.unlock()
  settings.examples_per_task = 3
  with pytest.raises(ConfigError, match="unknown config key eval.examples_per_task"):
    eval_settings.validate_settings(settings)


def test_a_context_too_small_for_a_task_is_a_config_error():
  config = tiny_config()
  tokenizer = ByteTokenizer()
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  with pytest.raises(ConfigError, match="eval task phonebook: no difficulty fits a context of "
                                        "64 tokens"):
    Evaluator(config, tokenizer, setup, settings=_settings(seq_len=0, tasks="phonebook"))


def test_birdie_prompts_carry_the_paradigm_tokens_and_results_repeat():
  """A (randomly initialised) Birdie model is prompted in the prefix layout, each task with its
  objective's paradigm token; the same params give the same report."""
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.train.seq_len = 256
  tokenizer = ByteTokenizer()
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  params = init_train_state(config, setup, tokenizer.vocab_size).params
  prompts = Evaluator(config, tokenizer, setup,
                      settings=_settings(tasks="copying,phonebook,perplexity", every=5))
  assert prompts.layout.kind == "prefix"
  assert [prompts.is_due(s) for s in (4, 5, 10)] == [False, True, True]
  paradigm = {t.name: prompts.paradigm_id(t) for t in prompts.tasks}
  assert paradigm == {name: tokenizer.special_id(special_tokens.PARADIGMS[cls]) for name, cls in (
      ("copying", "copying"), ("phonebook", "prefix_lm"), ("perplexity", "next_token_prediction"))}
  evaluator = Evaluator(config, tokenizer, setup,
                        settings=_settings(tasks="induction,story_infilling,perplexity"))
  first = evaluator.run(params, step=3)
  again = evaluator.run(params, step=3)
  assert first.to_json() | {"tasks": None} == again.to_json() | {"tasks": None}
  for name, result in first.tasks.items():
    assert again.tasks[name].rows == result.rows
    assert [r["difficulty"] for r in result.rows] == list(evaluator.tasks[
        [t.name for t in evaluator.tasks].index(name)].sweep)
  scalars = first.scalars
  assert set(scalars) == {"eval/induction/accuracy", "eval/story_infilling/accuracy",
                          "eval/perplexity/perplexity", "eval/perplexity/loss"}
  # An untrained model is near uniform: perplexity close to the vocabulary size.
  vocab = tokenizer.vocab_size
  assert 0.5 * vocab < scalars["eval/perplexity/perplexity"] < 2 * vocab
  ntp = tiny_config()
  ntp_eval = Evaluator(ntp, tokenizer, make_train_setup(ntp, tokenizer.vocab_size, setup.mesh),
                       settings=_settings(tasks="copying"))
  assert ntp_eval.layout.kind == "continuation" and ntp_eval.paradigm_id(ntp_eval.tasks[0]) is None


def test_finetuning_batches_are_laid_out_as_the_evaluator_prompts():
  """Fine-tuning rows pack the tasks' training examples, taking turns, in the prefix layout with
  the paradigm token, and train only on the scored target tokens (MQAR: the values)."""
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.train.seq_len = 256
  tokenizer = ByteTokenizer()
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  evaluator = Evaluator(config, tokenizer, setup, settings=_settings(tasks="mqar"))
  batch = next(training_batches(evaluator, ["mqar", "induction"], batch_size=4, seed=0))
  assert batch["inputs"].shape == (4, 512)
  paradigm = tokenizer.special_id(special_tokens.PARADIGMS["prefix_lm"])
  count = 0
  for row in range(4):
    for s in range(1, batch["segment_ids"][row].max() + 1):
      where = np.flatnonzero(batch["segment_ids"][row] == s)
      inputs, prefix = batch["inputs"][row, where], batch["prefix_mask"][row, where]
      trained = int(batch["loss_mask"][row, where].sum())
      assert inputs[0] == paradigm and inputs[prefix.sum()] == evaluator.layout.begin_id
      # Examples alternate: MQAR (X = [paradigm] + k v pairs; the values trained), induction.
      assert trained == ((prefix.sum() - 1) // 2 if count % 2 == 0 else 1)
      count += 1
  assert count >= 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """The tiny next-token arm of experiments/ (a 4-step Hawk on bytes; the same shapes as the
  reproduction's smoke test, so the two share compiled programs)."""
  path = str(tmp_path_factory.mktemp("run"))
  train_and_evaluate(reproduce_paper.arm_config("hawk_ntp", common.ARG_TINY), path)
  return path


def test_evaluate_writes_every_task(workdir):
  report = evaluate_run(workdir, settings=_settings())
  folder = os.path.join(workdir, "eval")
  with open(os.path.join(folder, "4.json"), encoding="utf-8") as f:
    stored = json.load(f)
  assert list(stored["tasks"]) == list(tasks.NAMES)
  assert stored["step"] == 4 and stored["layout"] == "continuation" and stored["seq_len"] == 512
  assert read_report(os.path.join(folder, "4.json")) == report
  for name, result in stored["tasks"].items():
    main = result["metrics"][0]
    assert result["rows"] and all(np.isfinite(r[main]) and r["examples"] == 1
                                  for r in result["rows"])
    assert set(result["overall"]) == set(result["metrics"])
    assert os.path.getsize(os.path.join(folder, f"4-{name}.png")) > 1000
  markdown = open(os.path.join(folder, "4.md"), encoding="utf-8").read()
  assert "| phonebook | digit_accuracy |" in markdown and "### story_infilling" in markdown
  perplexity = report.tasks["perplexity"]
  assert report.scalars["eval/perplexity/loss"] == pytest.approx(
      np.mean([r["loss"] for r in perplexity.rows]))
  assert report.scalars["eval/perplexity/perplexity"] == pytest.approx(
      np.exp(report.scalars["eval/perplexity/loss"]))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "birdie_jax.evaluate", *args], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                        text=True, check=False)


def test_evaluate_cli(workdir):
  result = _cli(f"--workdir={workdir}", "--tasks=induction", "--examples=2", "--seq_len=128")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith("## Evaluation at step 4")
  assert "| induction | accuracy |" in result.stdout
  result = _cli(f"--workdir={workdir}", "--tasks=induction,phonebok")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "birdie_jax.evaluate: error: unknown eval task 'phonebok'; the tasks are "
      + ", ".join(tasks.NAMES)]


def test_training_runs_the_evaluations_every_eval_every_steps(tmp_path):
  config = reproduce_paper.arm_config("hawk_ntp", common.ARG_TINY)
  config.eval.update({"every": 2, "tasks": "induction,perplexity", "examples": 1,
                      "seq_len": 128})
  train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl", encoding="utf-8")]
  evaluated = {r["step"]: r for r in rows if "eval/induction/accuracy" in r}
  assert sorted(evaluated) == [2, 4]
  assert all(0.0 <= r["eval/induction/accuracy"] <= 1.0 and r["eval/perplexity/perplexity"] > 1
             for r in evaluated.values())
  stored = read_report(str(tmp_path / "eval" / "4.json"))
  assert stored.scalars == pytest.approx({k: v for k, v in evaluated[4].items()
                                          if k.startswith("eval/")})
