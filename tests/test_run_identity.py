"""A run is what it was started as: its tokenizer is pinned at the first start (resume, generate
and evaluate never train another), a start that changes what defines the run stops in one line
before anything is written, and a change the user allows is logged with the old config kept."""
import json
import os
import shutil
import subprocess
import sys

import jax
import pytest
import sentencepiece as spm

from birdie_jax.data import embedded_corpus
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import cache_path, training_sample
from birdie_jax.errors import ConfigError
from birdie_jax.train import loop
from birdie_jax.trained_run import load_run, load_tokenizer
from helpers import ROOT, subprocess_env, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what runs do, not
# how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _train(config, workdir) -> int:
  return int(loop.train_and_evaluate(config, str(workdir))["step"])


def _tiny(steps=2):
  config = tiny_config()
  config.train.steps = steps
  config.checkpoint.async_save = False
  return config


def _spm_config(data_dir):
  """The tiny run on `data_dir` with a 600-piece sentencepiece tokenizer trained on its files."""
  config = _tiny()
  config.data.source = str(data_dir)
  config.data.val_fraction = 0.2
  config.data.tokenizer.kind = "sentencepiece"
  config.data.tokenizer.vocab_size = 600
  return config


@pytest.fixture(name="data_dir")
def _data_dir(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for i, passage in enumerate(embedded_corpus.passages()[:30]):
    (data / f"doc{i:02d}.txt").write_text(passage)
  return data


def _no_training(*args, **kwargs):
  raise AssertionError("a tokenizer was trained")


def _snapshot(workdir) -> dict[str, bytes]:
  """Every file of the run except checkpoints' contents (their step folders are listed)."""
  files = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  files["checkpoints/"] = " ".join(sorted(os.listdir(workdir / "checkpoints"))).encode()
  return files


def test_resume_keeps_the_pinned_tokenizer_when_the_data_changes(tmp_path, data_dir,
                                                                 monkeypatch, capsys):
  run = tmp_path / "run"
  config = _spm_config(data_dir)
  assert _train(config, run) == 2
  pinned = (run / "tokenizer" / "run.model").read_bytes()
  cached = sorted(os.listdir(run / "tokenizer"))

  (data_dir / "zz-new.txt").write_text(embedded_corpus.passages()[500] * 3)
  config.data.val_fraction, config.data.text_field = 0.3, "body"
  new_docs = load_documents(str(data_dir), "train", val_fraction=0.3)
  assert cache_path(training_sample(new_docs), 600, run).name not in cached  # would retrain
  monkeypatch.setattr(spm.SentencePieceTrainer, "train", _no_training)
  config.resume.allow = "data.val_fraction,data.text_field"
  assert _train(config, run) == 2  # restored with the pinned tokenizer's vocabulary
  assert (run / "tokenizer" / "run.model").read_bytes() == pinned
  assert sorted(os.listdir(run / "tokenizer")) == cached

  # a workdir from before pinning (config.json and the cached model) is pinned at its next start
  (run / "run.json").unlink()
  (run / "tokenizer" / "run.model").unlink()
  capsys.readouterr()
  assert load_tokenizer(config, str(run)).model_proto == pinned
  assert "predates tokenizer pinning" in capsys.readouterr().err
  config.resume.allow = ""
  config.data.val_fraction = 0.5  # compared with that run's config.json
  with pytest.raises(ConfigError, match=r"data\.val_fraction 0\.3 \(run\) != 0\.5 \(config\)"):
    _train(config, run)
  config.data.val_fraction = 0.3
  assert _train(config, run) == 2
  assert (run / "tokenizer" / "run.model").read_bytes() == pinned
  assert json.loads((run / "run.json").read_text())["identity"]["data.val_fraction"] == 0.3

  # generate and evaluate (load_run) read the pinned file, with the data gone or another config's
  shutil.rmtree(data_dir)
  loaded = load_run(str(run))
  assert loaded.step == 2 and loaded.tokenizer.model_proto == pinned
  other = _spm_config(tmp_path / "another-corpus")
  other.data.tokenizer.vocab_size = 700
  assert load_run(str(run), other).tokenizer.model_proto == pinned
  assert sorted(os.listdir(run / "tokenizer")) == cached
  other.model.bidirectional = True
  with pytest.raises(ConfigError) as info:
    load_run(str(run), other)
  assert str(info.value) == (f"the config describes another model than the run in {run}: "
                             "model.bidirectional False (run) != True (config)")


@pytest.fixture(name="tiny_run", scope="module")
def _tiny_run(tmp_path_factory):
  """A finished 2-step tiny run (bytes tokenizer) that tests copy before changing."""
  run = tmp_path_factory.mktemp("tiny") / "run"
  _train(_tiny(), run)
  return run


def test_rejected_change_stops_before_building_and_writes_nothing(tmp_path, tiny_run,
                                                                   monkeypatch):
  run = shutil.copytree(tiny_run, tmp_path / "run")
  before = _snapshot(run)
  config = _tiny()
  config.model.width = 48
  config.seed = 3
  with monkeypatch.context() as patch:
    patch.setattr(loop, "make_train_setup", _no_training)
    with pytest.raises(ConfigError) as info:
      _train(config, run)
  line = str(info.value)
  assert "\n" not in line
  assert "seed 0 (run) != 3 (config), model.width 32 (run) != 48 (config)" in line
  assert line.endswith("--config.resume.allow=seed,model.width")
  assert _snapshot(run) == before
  config.resume.allow = "seed,model.width"  # allowed, but the checkpoint cannot take it
  with pytest.raises(ConfigError, match="different shape"):
    _train(config, run)
  assert _snapshot(run) == before  # config.json is written only after the checkpoint restored


def test_allowed_change_is_logged_and_keeps_the_old_config(tmp_path, tiny_run, capsys):
  run = shutil.copytree(tiny_run, tmp_path / "run")
  first = (run / "config.json").read_text()
  config = _tiny(steps=4)
  config.seed = 1
  config.resume.allow = "seed"
  capsys.readouterr()
  assert _train(config, run) == 4
  assert (f"birdie_jax: warning: resume.allow: changing the run in {run}: seed 0 (run) != 1 "
          "(config)") in capsys.readouterr().err.splitlines()
  assert (run / "config.1.json").read_text() == first
  assert json.loads((run / "config.json").read_text())["seed"] == 1
  record = json.loads((run / "run.json").read_text())
  assert record["identity"]["seed"] == 1
  assert record["changes"] == [{"key": "seed", "run": 0, "config": 1}]
  # Each start appends where it ran: the first after step 0, this one after step 2.
  assert [s["step"] for s in record["starts"]] == [0, 2]
  assert {s["device_kind"] for s in record["starts"]} == {jax.devices()[0].device_kind}
  assert all(s["devices"] == jax.device_count() and s["jax"] == jax.__version__
             for s in record["starts"])

  # schedule knobs change without resume.allow; the accepted seed is now the run's
  config.resume.allow = ""
  config.train.update(steps=4, learning_rate=1e-3, log_every=1, eval_every=1)
  config.checkpoint.every_steps = 1
  assert _train(config, run) == 4  # already finished: nothing trained, the config accepted
  assert sorted(p.name for p in run.glob("config*.json")) == [
      "config.1.json", "config.2.json", "config.json"]
  config.seed = 0
  with pytest.raises(ConfigError, match=r"seed 1 \(run\) != 0 \(config\)"):
    _train(config, run)


def test_cli_restart_that_changes_the_model_stops_in_one_line(tmp_path, tiny_run):
  """The real CLI started on a run of configs/base.py:tiny (2 steps) with a bidirectional model and
  another seed stops in one line (exit 2) and leaves the run as it was."""
  run = shutil.copytree(tiny_run, tmp_path / "run")
  before = _snapshot(run)
  result = subprocess.run(
      [sys.executable, "-m", "birdie_jax.main", "--config=configs/base.py:tiny",
       f"--workdir={run}", "--config.train.steps=2", "--config.model.bidirectional=True",
       "--config.seed=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=subprocess_env())
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("birdie_jax: error: ")
  assert "seed 0 (run) != 1 (config), model.bidirectional False (run) != True (config)" in lines[0]
  assert _snapshot(run) == before
