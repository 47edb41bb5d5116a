"""experiments/: the paper reproduction smoke-runs at tiny scale within a budget and resumes; its
RESULTS.md states what the numbers say, from the eval files alone."""
import json
import math
import os

import jax
import pytest

import helpers  # noqa: F401  (puts the repository root, home of experiments/, on sys.path)
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.evals.report import Report, TaskResult, read_report
from birdie_jax.trained_run import load_run
from experiments import reproduce_paper, results
from experiments.configs import common
from models_helpers import fast_compile  # noqa: F401  (fixture)


@pytest.mark.usefixtures("fast_compile")
def test_reproduce_paper_tiny_resumes_within_budgets(tmp_path, monkeypatch):
  workdir, path = str(tmp_path / "paper"), str(tmp_path / "RESULTS.md")
  arm = os.path.join(workdir, "hawk_ntp")
  # A 1 s budget runs out during the first arm: no evaluation starts, no results are written.
  assert not reproduce_paper.reproduce(workdir, arms=("hawk_ntp",), arg=common.ARG_TINY,
                                       budget_s=1.0, results_path=path)
  assert not os.path.exists(path) and not os.path.exists(os.path.join(arm, "eval"))
  # The same command goes on from the checkpoints and finishes, here in a child process.
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  assert reproduce_paper.reproduce(workdir, arms=("hawk_ntp",), arg=common.ARG_TINY,
                                   budget_s=600.0, results_path=path, parallel=2)
  with open(os.path.join(workdir, "hawk_ntp.log"), encoding="utf-8") as f:
    assert "== hawk_ntp: hawk, curriculum ntp" in f.read()  # the child's own output
  config = reproduce_paper.arm_config("hawk_ntp", common.ARG_TINY)
  steps = config.train.steps
  for stage in ("eval", os.path.join("finetune", "eval")):
    with open(os.path.join(arm, stage, f"{steps}.json"), encoding="utf-8") as f:
      assert json.load(f)["seq_len"] == common.eval_settings_for(common.ARG_TINY).seq_len
  finetune_steps = common.finetune_settings(common.ARG_TINY).steps
  with open(os.path.join(arm, "finetune", "losses.json"), encoding="utf-8") as f:
    assert [s for s, _ in json.load(f)] == sorted({1, finetune_steps})  # first and last step
  text = open(path, encoding="utf-8").read()
  # The table's parameters are those of the checkpoint; its tokens, every step's batch x row.
  num_params = sum(x.size for x in jax.tree.leaves(load_run(arm).params))
  tokens = steps * config.train.batch_size * config.train.seq_len
  assert f"| hawk_ntp | hawk | ntp | False | {num_params:,} | {tokens:,} |" in text
  assert "### phonebook: digit accuracy" in text and "python -m experiments.reproduce_paper" in text
  assert os.path.exists(tmp_path / "results" / "mqar-finetuned.png")
  with open(os.path.join(workdir, "invocations.jsonl"), encoding="utf-8") as f:
    commands = [json.loads(line)["command"] for line in f]
  assert len(commands) == 3 and "--arms=hawk_ntp --budget_s=" in commands[1]  # child, parent
  assert "shared the device" in text
  # Everything is done: a third call only rewrites the results.
  assert reproduce_paper.reproduce(workdir, arms=("hawk_ntp",), arg=common.ARG_TINY,
                                   budget_s=0.5, results_path=path)


def _report(step, accuracy, examples=100):
  rows = ({"difficulty": 1, "examples": examples, "chance": 0.1, "digit_accuracy": accuracy,
           "exact_match": 0.0},)
  result = TaskResult("phonebook", ("digit_accuracy", "exact_match"), "numbers", True, rows,
                      {"digit_accuracy": accuracy, "exact_match": 0.0}, 1.0)
  return Report(step=step, layout="prefix", seq_len=512, examples=examples,
                tasks={"phonebook": result})


def _arm(workdir, name, zero, tuned):
  folder = os.path.join(workdir, name)
  _report(10, zero).write(os.path.join(folder, "eval"))
  _report(10, tuned).write(os.path.join(folder, "finetune", "eval"))
  info = {"family": "hawk", "curriculum": name.split("_", 1)[1], "bidirectional": True,
          "num_params": 1000, "tokens": 2048, "pretrain_s": 1.0, "finetune_s": 1.0,
          "eval_s": 1.0, "val_loss": 3.0}
  with open(os.path.join(folder, "arm.json"), "w", encoding="utf-8") as f:
    json.dump(info, f)


@pytest.mark.parametrize("birdie, verdict", [
    (0.80, "hawk_birdie beats hawk_ntp on 1 of 1 retrieval tasks after phonebook fine-tuning"),
    (0.13, "hawk_birdie does not beat hawk_ntp on phonebook retrieval at this scale"),
])
def test_results_verdict_comes_from_the_numbers(tmp_path, birdie, verdict):
  """0.80 vs 0.11 over 100 examples is far beyond two standard errors; 0.13 vs 0.11 is not."""
  workdir = str(tmp_path)
  _arm(workdir, "hawk_ntp", 0.10, 0.11)
  _arm(workdir, "hawk_birdie", 0.10, birdie)
  with open(os.path.join(workdir, "invocations.jsonl"), "w", encoding="utf-8") as f:
    f.write(json.dumps({"date": "2026-11-25T00:00:00+00:00", "device": "NVIDIA H100",
                        "command": "python -m experiments.reproduce_paper"}) + "\n")
  path = str(tmp_path / "RESULTS.md")
  results.write_results(workdir, ("hawk_ntp", "hawk_birdie"), path, {"steps": 2})
  text = open(path, encoding="utf-8").read()
  assert verdict in text
  assert f"| hawk_birdie | 0.100 | {birdie:.3f} | {birdie:.3f} |" in text
  assert "on NVIDIA H100" in text and "2026-11-25T00:00:00+00:00" in text


@pytest.mark.usefixtures("fast_compile")
def test_phonebook_probe_trains_a_fresh_model_and_writes_its_report(tmp_path):
  from experiments import phonebook_probe  # pylint: disable=g-import-not-at-top
  steps, examples = 3, 8
  report = phonebook_probe.probe(str(tmp_path), width=32, depth=1, seq_len=256, steps=steps,
                                 batch_size=8, examples=examples, learning_rate=1e-2)
  with open(tmp_path / "losses.json", encoding="utf-8") as f:
    losses = json.load(f)
  assert [s for s, _ in losses] == [1, steps]
  # A fresh model does no better than a uniform guess over the byte tokenizer's ids; two steps at
  # this rate cut its loss (by 1.1-1.2 nats on seeds 0 and 1), and the evaluated model is the
  # fine-tuned one: its teacher-forced loss on the answers is as low.
  first, last = losses[0][1], losses[-1][1]
  assert first > math.log(ByteTokenizer().vocab_size) - 0.25, losses
  assert last < first - 0.5, losses
  assert report.tasks["phonebook"].overall["target_loss"] < first - 0.5
  # The eval file is the returned report, and each overall number is its rows' mean.
  written = read_report(str(tmp_path / "eval" / f"{steps}.json"))
  assert written.to_json() == report.to_json()
  assert set(written.tasks) == {"phonebook"} and written.step == steps
  result = written.tasks["phonebook"]
  assert result.rows and all(row["examples"] == examples for row in result.rows)
  for metric in result.metrics:
    assert result.overall[metric] == pytest.approx(
        sum(row[metric] for row in result.rows) / len(result.rows)), metric


def test_phonebook_probe_rejects_a_step_count_below_one(tmp_path):
  from experiments import phonebook_probe  # pylint: disable=g-import-not-at-top
  from birdie_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="--steps must be at least 1, got 0"):
    phonebook_probe.probe(str(tmp_path), steps=0)
