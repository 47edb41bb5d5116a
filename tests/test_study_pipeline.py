"""The study's whole chain at toy size on CPU: pre-train two arms, evaluate them (objective
competence, natural-text copying), score held-out perplexity, run the phonebook fine-tuning
protocol, and write RESULTS.md from the run files alone (STATUS.md's steps 1-5, in process).

The corpus is replaced by a small slice of the embedded Shakespeare written as JSONL.zst under the
study's file names (`$BIRDIE_STUDY_CORPUS`), as a GPU call reads the Gutenberg shards.
"""
from __future__ import annotations

import json
import os

import jax
import pytest
import zstandard

import helpers  # noqa: F401  (puts the repository root, home of experiments/, on sys.path)

from birdie_jax.data.embedded_corpus import passages
from birdie_jax.evaluate import evaluate_objectives, evaluate_run
from birdie_jax.train.loop import train_and_evaluate
from experiments.study import config as study
from experiments.study import results, runs
from experiments.study import finetune
from experiments.study.heldout import write_heldout
from models_helpers import fast_compile  # noqa: F401  (fixture)

# The gate's reference and the Birdie arm of its family: claim (a) has both sides.
ARMS = ("transformer-50m-ntp-lr1e-3-s0", "transformer-50m-birdie-s0")


def _write_corpus(folder, texts) -> None:
  """The study's three corpus files, each a JSONL.zst of `texts`."""
  os.makedirs(folder)
  data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
  for name in (study.TINY_SOURCE, "gutenberg_val.jsonl.zst"):
    with open(os.path.join(folder, name), "wb") as f:
      f.write(zstandard.ZstdCompressor().compress(data))


def _tiny_config(arm: str):
  config = study.get_config(f"{arm},tiny")
  config.train.update(steps=4, eval_every=4, log_every=2)
  config.checkpoint.every_steps = 4
  config.eval.update(tasks="copying_text", examples=2)  # the gate's copy check (16 tokens)
  return config


@pytest.mark.usefixtures("fast_compile")
def test_toy_study_trains_evaluates_finetunes_and_writes_results(tmp_path, monkeypatch):
  # One learning rate of the protocol's sweep (each is its own compile; the sweep's choice is
  # tested in test_train_finetune): 30 s less of a 2-minute test.
  monkeypatch.setitem(finetune.TINY, "learning_rates", (1e-4,))
  corpus = tmp_path / "corpus"
  _write_corpus(corpus, passages()[:120])
  monkeypatch.setenv(study.CORPUS_ENV, str(corpus))
  root = tmp_path / "runs"
  for arm in ARMS:
    workdir = str(root / arm)
    train_and_evaluate(_tiny_config(arm), workdir)
    evaluate_run(workdir)
    evaluate_objectives(workdir)
    write_heldout(workdir, batches=1, batch_size=8, files=("gutenberg_val.jsonl.zst",))
    finetune.finetune_task(workdir, "phonebook", tiny=True)

  values = results._finite(runs.collect(str(root), study.ARMS))
  assert set(values) == {runs.group_of(a) for a in ARMS}
  for arm in ARMS:  # every stage left its numbers, read back from that stage's own file
    got = values[runs.group_of(arm)]
    for key in ("val_loss", runs.GATE_COPY, runs.GATE_PHONEBOOK, "phonebook/steps_to_90",
                "perplexity/gutenberg_val", "objectives/next_token_prediction"):
      assert len(got[key]) == 1, (arm, key)
    with open(root / arm / "heldout.json", encoding="utf-8") as f:
      assert got["perplexity/gutenberg_val"] == [json.load(f)["gutenberg_val"]["perplexity"]]
    with open(root / arm / "metrics.jsonl", encoding="utf-8") as f:
      last = [row["val_loss"] for row in map(json.loads, f) if "val_loss" in row][-1]
    assert got["val_loss"] == [last]
    # A 4-step model learns no phonebook: "not reached" counts as the protocol's whole length
    # (4 steps, paused at the pruning step 2 and resumed from the kept state).
    assert got["phonebook/steps_to_90"] == [4]
    facts = runs.run_facts(str(root / arm))  # where it ran, from run.json's starts
    assert facts["cards"] == [jax.devices()[0].device_kind] and facts["tokens"] == 4 * 8 * 128

  text = results.markdown(values)
  gate, rest = text.split("\n## ", 1)
  # 4-step models cannot copy: the gate fails and says so before any comparison; claim (a)'s
  # comparisons of the two arms on the gate's tasks carry its mark; arms that did not run are
  # missing, not invented.
  assert "Sanity gate: FAILED" in gate and "transformer-50m-ntp-lr1e-3" in gate
  assert rest.startswith("transformer 50m") and "## hawk" not in rest
  claim_a = rest.split("### (a)")[1].split("\n### ")[0]
  copying = [r for r in claim_a.splitlines() if "| copying_text |" in r]
  assert len(copying) == 1 and "uninformative: gate" in copying[0], claim_a
  assert "transformer-50m-birdie | transformer-50m-ntp-lr1e-3" in copying[0]
  claim_b = rest.split("### (b)")[1].split("\n### ")[0]
  assert "missing" in claim_b and "uninformative" not in claim_b
  table = rest.split("## Every arm")[1]
  assert sum(r.startswith("| transformer-50m-") for r in table.splitlines()) == 2
