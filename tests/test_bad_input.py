"""Every user mistake of the foundation issue ends in one clear ConfigError line, before compiling."""
import subprocess
import sys

import pytest

from birdie_jax.config import validate_config
from birdie_jax.errors import ConfigError
from birdie_jax.train import loop
from helpers import ROOT, tiny_config


@pytest.fixture(name="no_compile")
def _no_compile(monkeypatch):
  """Fails the test if training gets as far as building the model."""

  def forbidden(*args, **kwargs):
    raise AssertionError("reached model construction before rejecting the input")

  monkeypatch.setattr(loop, "make_train_setup", forbidden)


def _expect(config, tmp_path, match):
  with pytest.raises(ConfigError, match=match) as info:
    loop.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(info.value)


def test_unknown_key(tmp_path, no_compile):
  config = tiny_config()
  config.unlock()
  config.train.stepz = 3
  _expect(config, tmp_path, r"unknown config key train\.stepz \(did you mean train\.steps\?\)")


def test_wrong_type(tmp_path, no_compile):
  config = tiny_config()
  config.unlock()
  del config.model.depth
  config.model.depth = "four"
  _expect(config, tmp_path, r"model\.depth must be an integer")


@pytest.mark.parametrize("key", ["train.steps", "train.batch_size", "train.seq_len",
                                 "model.width", "checkpoint.every_steps"])
def test_non_positive_sizes(tmp_path, no_compile, key):
  config = tiny_config()
  group, name = key.split(".")
  config[group][name] = 0
  _expect(config, tmp_path, rf"{key} must be positive, got 0")


def test_missing_data_path(tmp_path, no_compile):
  config = tiny_config()
  config.data.source = str(tmp_path / "nowhere" / "*.txt")
  _expect(config, tmp_path, "nowhere")


def test_mesh_that_does_not_divide_the_devices(tmp_path, no_compile):
  config = tiny_config(data=-1, fsdp=3)
  _expect(config, tmp_path, r"does not divide the 8 devices")
  config = tiny_config(data=2, fsdp=2, tensor=1)
  _expect(config, tmp_path, r"uses 4 devices but 8 are available")


def test_batch_that_does_not_divide_the_mesh(tmp_path, no_compile):
  config = tiny_config(data=8)
  config.train.batch_size = 12
  _expect(config, tmp_path, r"train\.batch_size \(12\) must be divisible")


def test_workdir_of_another_model_shape(tmp_path):
  config = tiny_config()
  config.train.steps = 2
  loop.train_and_evaluate(config, str(tmp_path))
  config.model.width = 48
  with pytest.raises(ConfigError, match="different shape"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_defaults_are_valid():
  validate_config(tiny_config())


@pytest.mark.parametrize("args, message", [
    (["--config=configs/base.py:tiny", "--config.train.stepz=3"], "stepz"),
    (["--config=configs/base.py:tiny", "--config.train.steps=-1"], "train.steps must be positive"),
    (["--config=configs/base.py:tiny", "--config.mesh.shape.data=3"],
     "uses 3 devices but 1 are available"),
    (["--config=configs/base.py:tiny", "--config.data.source=/no/such/dir"], "/no/such/dir"),
    (["--config=configs/missing.py"], "missing.py"),
])
def test_cli_prints_one_line(tmp_path, args, message):
  result = subprocess.run(
      [sys.executable, "-m", "birdie_jax.main", f"--workdir={tmp_path}", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("birdie_jax: error:"), result.stderr
  assert message in lines[0]
