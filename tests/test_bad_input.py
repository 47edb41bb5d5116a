"""Every user mistake ends in one clear ConfigError line before compiling, or is skipped and counted."""
import json
import subprocess
import sys

import pytest

from birdie_jax.config import validate_config
from birdie_jax.errors import ConfigError
from birdie_jax.train import loop
from helpers import ROOT, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what runs do, not
# how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")


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
                                 "model.width", "checkpoint.every_steps",
                                 "train.max_nonfinite_in_a_row"])
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


@pytest.mark.parametrize("weights, message", [
    ("copying=0.5,infilling=0.4", r"data\.class_weights must sum to 1, got 0\.9"),
    ("copying=0.5,copy=0.5", r"data\.class_weights names 'copy', not a class of this curriculum"),
    ("copying=1.5,infilling=-0.5", r"data\.class_weights: weight of infilling must be >= 0"),
])
def test_bad_class_weights(tmp_path, no_compile, weights, message):
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.data.class_weights = weights
  _expect(config, tmp_path, message)


def test_objective_lengths_that_cannot_fit_the_rows(tmp_path, no_compile):
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.bidirectional = True
  config.data.length_scale = 1.0  # the paper's lengths for 2048-token rows, in 64-token rows
  _expect(config, tmp_path, r"train\.seq_len 64 is too small for curriculum birdie: .* needs "
          r"examples of at least \d+ positions \(lengths scaled by 1; see data\.length_scale\)")


def test_empty_and_non_utf8_documents_are_skipped_and_counted_once(tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  for i in range(12):
    (data / f"doc{i:02d}.txt").write_text(f"Document {i}: " + "words and more words. " * 20)
  (data / "empty.txt").write_text("")
  (data / "blank.txt").write_text(" \n\t\n")
  (data / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
  (data / "rows.jsonl").write_bytes(b"\n".join([json.dumps({"text": "a JSONL document"}).encode(),
                                                b'{"text": "caf\xe9"}', b"{broken"]))
  config = tiny_config()
  config.data.source = str(data)
  config.data.val_fraction = 0.3
  config.train.steps = 2
  final = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert final["step"] == 2
  lines = capsys.readouterr().err.splitlines()
  assert lines == [f"birdie_jax: warning: data source {data}: 5 documents skipped (2 empty, "
                   "2 not UTF-8, 1 malformed JSONL)"]


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
    (["--config=configs/base.py", "--config.data.class_weights=copying=0.7,infilling=0.7"],
     "data.class_weights must sum to 1, got 1.4"),
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
