"""A failed restore renames a checkpoint .damaged only on proof of damage: a transient error is
retried and resumes from the newest checkpoint, a lasting one stops in one line renaming nothing,
and a changed data layout (data.num_workers, process count) stops in one line naming the knob."""
import json
import shutil

import orbax.checkpoint as ocp
import pytest

from birdie_jax.errors import ConfigError, TrainingError
from birdie_jax.train import loop
from birdie_jax.train import restore_faults
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _config():
  """The 8-step run of tests/test_reliability_checkpoints.py (its compiled step is shared)."""
  config = tiny_config()
  config.train.log_every = 1
  config.checkpoint.every_steps = 2
  return config


@pytest.fixture(scope="module", name="finished")
def _finished(tmp_path_factory):
  """A finished run with checkpoints 4, 6 and 8."""
  workdir = tmp_path_factory.mktemp("finished")
  loop.train_and_evaluate(_config(), str(workdir))
  return workdir


@pytest.fixture(name="run")
def _run(finished, tmp_path, monkeypatch):
  """A copy of the finished run; retries wait no time."""
  monkeypatch.setattr(restore_faults, "BACKOFF_S", 0.0)
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  return workdir


def _failing_reads(monkeypatch, failures: int):
  """Every checkpoint read raises OSError (a store's 503) for the first `failures` reads."""
  restore, calls = ocp.CheckpointManager.restore, []

  def flaky(self, *args, **kwargs):
    calls.append(1)
    if len(calls) <= failures:
      raise OSError(5, "503 Service Unavailable from the object store")
    return restore(self, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", flaky)
  return calls


def _listing(workdir):
  return sorted(p.name for p in (workdir / "checkpoints").iterdir())


def test_transient_read_errors_are_retried_and_resume_from_the_newest(run, monkeypatch, capsys):
  calls = _failing_reads(monkeypatch, failures=2)
  capsys.readouterr()
  loop.train_and_evaluate(_config(), str(run))
  captured = capsys.readouterr()
  assert "resumed from step 8" in captured.out and len(calls) >= 3
  assert "birdie_jax: warning" not in captured.err and "Traceback" not in captured.err
  assert _listing(run) == ["4", "6", "8"]


def test_a_lasting_read_error_stops_in_one_line_renaming_nothing(run, monkeypatch):
  config = _config()
  config.checkpoint.restore_retries = 3
  calls = _failing_reads(monkeypatch, failures=10**9)
  with pytest.raises(TrainingError, match=r"^cannot read checkpoint 8 in .*checkpoints \(OSError: "
                     r".*503 .*\) after 4 tries; nothing was moved or deleted") as info:
    loop.train_and_evaluate(config, str(run))
  assert "\n" not in str(info.value) and len(calls) == 4
  assert _listing(run) == ["4", "6", "8"]


def test_memory_error_is_not_damage(run, monkeypatch):
  restore = ocp.CheckpointManager.restore

  def out_of_memory(self, *args, **kwargs):
    if "state" in kwargs.get("args", {}).keys():
      raise MemoryError()
    return restore(self, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", out_of_memory)
  with pytest.raises(TrainingError, match=r"cannot read checkpoint 8 .*MemoryError"):
    loop.train_and_evaluate(_config(), str(run))
  assert _listing(run) == ["4", "6", "8"]


def _meta(workdir, step):
  return workdir / "checkpoints" / str(step) / "meta" / "metadata"


def test_changed_num_workers_stops_naming_the_knob(run):
  assert json.loads(_meta(run, 8).read_text())["data_layout"] == {
      "data.num_workers": 0, "process_count": 1}
  config = _config()
  config.data.num_workers = 2
  with pytest.raises(ConfigError) as info:
    loop.train_and_evaluate(config, str(run))
  assert str(info.value).startswith(
      f"checkpoint 8 in {run / 'checkpoints'} was written with data.num_workers=0 and this start "
      "has data.num_workers=2:")
  assert str(info.value).endswith("resume with --config.data.num_workers=0")
  assert _listing(run) == ["4", "6", "8"]


def test_changed_process_count_stops_naming_it_also_for_older_checkpoints(run):
  """A checkpoint whose meta predates the layout record: its data files tell."""
  for step in (4, 6, 8):
    meta = json.loads(_meta(run, step).read_text())
    del meta["data_layout"]
    _meta(run, step).write_text(json.dumps(meta))
    data = run / "checkpoints" / str(step) / "data"
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
    shutil.copy(data / "process_0-of-2.json", data / "process_1-of-2.json")
  with pytest.raises(ConfigError, match=r"^checkpoint 8 in .* was written by 2 processes and this "
                     r"start has 1: .*; resume with 2 processes") as info:
    loop.train_and_evaluate(_config(), str(run))
  assert "\n" not in str(info.value)
  assert _listing(run) == ["4", "6", "8"]
