"""Damaged checkpoints: the newest one that restores whole is used, with one warning line."""
import json
import shutil

import pytest

from birdie_jax.errors import ConfigError
from birdie_jax.train import loop
from helpers import tiny_config


def _config():
  """8 steps (the compiled step is shared with tests/test_training_loop.py), checkpoints every 2."""
  config = tiny_config()
  config.train.log_every = 1
  config.checkpoint.every_steps = 2
  return config


def _losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module", name="finished")
def _finished(tmp_path_factory):
  """A finished run with checkpoints 4, 6 and 8, and its logged losses."""
  workdir = tmp_path_factory.mktemp("finished")
  loop.train_and_evaluate(_config(), str(workdir))
  return workdir, _losses(workdir)


def _truncate_arrays(step_dir):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    path.write_bytes(path.read_bytes()[:10])


def test_damaged_latest_checkpoints_fall_back_to_an_older_one(finished, tmp_path, capsys):
  source, losses = finished
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  checkpoints = workdir / "checkpoints"
  _truncate_arrays(checkpoints / "8")
  (checkpoints / "6" / "data" / "process_0-of-1.json").unlink()
  # What a run killed while writing step 10 leaves behind: Orbax's unfinished tmp folder; it is
  # not a checkpoint (else it would be reported damaged first).
  shutil.copytree(checkpoints / "4" / "state", checkpoints / "10.orbax-checkpoint-tmp" / "state")
  (workdir / "metrics.jsonl").unlink()
  capsys.readouterr()
  loop.train_and_evaluate(_config(), str(workdir))
  captured = capsys.readouterr()
  warnings = [l for l in captured.err.splitlines() if l.startswith("birdie_jax: warning:")]
  assert len(warnings) == 1 and "Traceback" not in captured.err, captured.err
  assert warnings[0].startswith(f"birdie_jax: warning: checkpoints 8, 6 in {checkpoints} cannot "
                                "be restored (")
  assert warnings[0].endswith("moved to <step>.damaged, resuming from checkpoint 4")
  assert "resumed from step 4" in captured.out
  resumed = _losses(workdir)
  assert sorted(resumed) == list(range(5, 9))
  assert [resumed[s] for s in range(5, 9)] == [losses[s] for s in range(5, 9)]
  assert sorted(p.name for p in checkpoints.iterdir()) == [
      "10.orbax-checkpoint-tmp", "4", "6", "6.damaged", "8", "8.damaged"]


def test_no_restorable_checkpoint_is_one_clear_error(finished, tmp_path):
  source, _ = finished
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  for step in (4, 6, 8):
    (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{trunc")
  with pytest.raises(ConfigError, match=r"no checkpoint in .* can be restored \(checkpoints 8, "
                     r"6, 4; newest: .*\); move them away or use a new --workdir") as info:
    loop.train_and_evaluate(_config(), str(workdir))
  assert "\n" not in str(info.value)
