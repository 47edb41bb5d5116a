"""A run's files in a local folder or in object storage (`gs://`, emulated by a local folder through
etils' epath mock): config, metrics, evaluation reports, plots and the tokenizer cache land in the
workdir itself, never in a local folder named `gs:`."""
import json
import os

import pytest
from etils.epath import testing as epath_testing

from birdie_jax.data import embedded_corpus
from birdie_jax.data.tokenizer import train_sentencepiece
from birdie_jax.evals.report import Report, TaskResult, read_report
from birdie_jax.train.metrics import MetricsWriter
from birdie_jax.trained_run import load_config, load_tokenizer
from birdie_jax.config import default_config
from birdie_jax.workdir import as_path, is_remote, write_atomic

WORKDIR = "gs://bucket/runs/hawk"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """`gs://B/...` paths map to `tmp_path/gcs/B/...` (the fixture's value: `tmp_path/gcs/bucket`);
  the test runs in an empty `tmp_path/cwd`."""
  root = tmp_path / "gcs"
  root.mkdir()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)

  def local(path):
    path = os.fspath(path)
    return str(root / path[len("gs://"):]) if path.startswith("gs://") else path

  def mapped(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def mapped_pair(fn, path, dst, *args, **kwargs):
    return fn(local(path), local(dst), *args, **kwargs)

  def glob(fn, pattern):
    return ["gs://" + os.path.relpath(p, root) if p.startswith(str(root)) else p
            for p in fn(local(pattern))]

  one = {name: mapped for name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir",
                                   "remove", "rmtree", "stat")}
  with epath_testing.mock_epath(**one, rename=mapped_pair, replace=mapped_pair, glob=glob):
    yield root / "bucket"
  assert os.listdir(cwd) == []  # nothing written beside the run


def test_write_atomic_replaces_whole_files_locally(tmp_path):
  path = tmp_path / "a" / "b.json"
  write_atomic(path, "first")
  write_atomic(path, b"second")
  assert path.read_text() == "second"
  assert sorted(os.listdir(path.parent)) == ["b.json"]  # no temporary left behind
  assert not is_remote(path) and is_remote(WORKDIR)
  assert str(as_path("~/x")) == os.path.expanduser("~/x")


def test_metrics_resume_in_object_storage(bucket, capsys):
  writer = MetricsWriter(WORKDIR)
  writer.write(1, {"loss": 2.5})
  writer.write(2, {"loss": 2.0})
  writer.close()
  path = bucket / "runs/hawk/metrics.jsonl"
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"step": 3, "lo')  # a write cut short
  resumed = MetricsWriter(WORKDIR)
  resumed.write(3, {"loss": 1.5})
  resumed.close()
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert rows == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.5}]
  assert "google-cloud-storage" in capsys.readouterr().err  # TensorBoard skipped, said once


def test_remote_metrics_are_uploaded_at_most_every_interval_and_at_each_flush(bucket):
  path = bucket / "runs/hawk/metrics.jsonl"

  def steps() -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]

  writer = MetricsWriter(WORKDIR, flush_every_s=3600.0)
  writer.write(1, {"loss": 2.5})
  writer.write(2, {"loss": 2.0})
  assert not path.exists()  # no upload per logged step
  writer.flush()  # as the loop does at each checkpoint
  assert steps() == [1, 2]
  stamp = path.stat().st_mtime_ns
  writer.flush()
  assert path.stat().st_mtime_ns == stamp  # nothing new: nothing rewritten
  writer.write(3, {"loss": 1.5})
  writer.close()
  assert steps() == [1, 2, 3]
  eager = MetricsWriter(WORKDIR, flush_every_s=0.0)
  eager.write(4, {"loss": 1.0})
  assert steps() == [1, 2, 3, 4]  # the interval has passed: written at once
  eager.close()


def test_reports_config_and_tokenizer_in_object_storage(bucket):
  rows = ({"difficulty": 1, "examples": 10, "chance": 0.1, "digit_accuracy": 0.5},)
  result = TaskResult("phonebook", ("digit_accuracy",), "numbers", True, rows,
                      {"digit_accuracy": 0.5}, 1.0)
  report = Report(step=7, layout="prefix", seq_len=64, examples=10, tasks={"phonebook": result})
  report.write(WORKDIR + "/eval")
  assert sorted(os.listdir(bucket / "runs/hawk/eval")) == ["7-phonebook.png", "7.json", "7.md"]
  assert read_report(WORKDIR + "/eval/7.json").to_json() == report.to_json()

  config = default_config()
  config.data.tokenizer.vocab_size = 768
  write_atomic(WORKDIR + "/config.json", config.to_json_best_effort(indent=2))
  assert load_config(WORKDIR).data.tokenizer.vocab_size == 768

  documents = list(embedded_corpus.passages()[:40])
  trained = train_sentencepiece(documents, vocab_size=768, cache_dir=WORKDIR)
  cached = os.listdir(bucket / "runs/hawk/tokenizer")
  assert len(cached) == 1 and cached[0].startswith("spm_")
  config.data.source = "/nonexistent/corpus.jsonl"  # rebuilding would have to read it
  loaded = load_tokenizer(config, WORKDIR)  # so this is the cached model, found by globbing
  assert list(loaded.encode(documents[0])) == list(trained.encode(documents[0]))
