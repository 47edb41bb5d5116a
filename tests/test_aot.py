"""birdie_jax.aot compiles a config's real train step for a TPU topology on this CPU host (needs
libtpu, which requirements-aot.txt pins on Linux x86-64; no TPU is used)."""
import dataclasses
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

from birdie_jax.errors import ConfigError
from birdie_jax.chips import TPU_CHIPS, parse_topology, topology_chips

REPO = pathlib.Path(__file__).resolve().parent.parent
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (`pip install -r requirements-aot.txt` adds it on Linux x86-64), "
           "so nothing can be compiled for a TPU")


def test_topology_names():
  assert parse_topology("v5e:16x16") == ("v5e", (16, 16))
  assert topology_chips("v4:4x4x4") == 64  # v4-128 in TensorCore naming
  assert TPU_CHIPS["v5e"].hbm_gib == 16 and TPU_CHIPS["v4"].megacore
  for bad in ("v4-128", "v9:2x2", "v5e:2xa", "v5e"):
    with pytest.raises(ConfigError, match="v5e:16x16"):
      parse_topology(bad)


@needs_libtpu
def test_v4_compiles_one_device_per_chip():
  from birdie_jax.aot import topology_devices  # pylint: disable=g-import-not-at-top
  devices = topology_devices("v4:2x2x1")
  assert len(devices) == 4 and devices[0].device_kind == "TPU v4"


def _aot(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "birdie_jax.aot", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False)


@needs_libtpu
def test_tiny_config_compiles_for_v5e_2x2(tmp_path):
  out = tmp_path / "aot.jsonl"
  result = _aot("--config=configs/sweep.py:hawk-tiny-birdie", "--topology=v5e:2x2",
                f"--json={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  row = json.loads(out.read_text(encoding="utf-8"))
  assert row["config"] == "configs/sweep.py:hawk-tiny-birdie"
  assert row["device_kind"] == "TPU v5 lite" and row["chips"] == 4
  assert row["mesh"]["data"] == 4 and math.prod(row["mesh"].values()) == 4
  assert 0 < row["hbm_bytes"] < 16 * 2**30
  assert row["tokens_per_step"] == 8 * 64
  # XLA's per-device FLOPs x 4 chips: the model's 6·N·tokens plus attention-free extras (the
  # tiny model's embedding-heavy forward and the bidirectional scans), not a multiple of it.
  assert 0.8 < row["xla_flops"] * 4 / row["model_flops"] < 3
  assert row["roofline_step_s"] > 0 and 0 < row["roofline_mfu"] <= 1
  for label in ("HBM per device", "of 16 GiB", "FLOPs per step", "at an assumed 40% MFU",
                "roofline", "compile"):
    assert label in result.stdout


@needs_libtpu
def test_batch_that_does_not_split_over_the_slice_fails_in_one_line(tmp_path):
  result = _aot("--config=configs/sweep.py:hawk-tiny-ntp", "--topology=v5e:4x4")
  assert result.returncode == 2
  assert "birdie_jax.aot: error: train.batch_size (8) must be divisible" in result.stderr


@needs_libtpu
def test_a_step_that_does_not_fit_reports_xla_s_message(tmp_path):
  out = tmp_path / "aot.jsonl"  # 1024 rows x 8192 tokens x 531 logits a chip: over 16 GiB
  result = _aot("--config=configs/sweep.py:hawk-tiny-ntp", "--topology=v5e:2x2",
                "--config.train.batch_size=4096", "--config.train.seq_len=8192",
                "--config.model.scan_layers=true", f"--json={out}")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "HBM per device  DOES NOT FIT: Ran out of memory" in result.stdout
  row = json.loads(out.read_text(encoding="utf-8"))
  assert "exceeds" in row["out_of_memory"] and row["hbm_bytes"] == 0
  assert row["scanned_layers"]  # the tiny Hawk's two blocks were stacked


def test_scanned_layers_leave_out_xla_counts():
  from birdie_jax.aot import AotReport, format_report  # pylint: disable=g-import-not-at-top
  report = AotReport(topology="v5e:2x2", device_kind="TPU v5 lite", mesh={"fsdp": 4},
                     num_params=10**6, tokens_per_step=512, lower_s=1.0, compile_s=2.0,
                     hbm_bytes=2**30, xla_flops=1e9, xla_bytes_accessed=1e9)
  assert "roofline" in format_report(report, 0.4)
  text = format_report(dataclasses.replace(report, scanned_layers=True), 0.4)
  assert "roofline" not in text.split("left out")[-1] and "scan_layers=false" in text
  assert "XLA 4e+09" not in text and "6·N·tokens 3.07e+09" in text


@needs_libtpu
def test_a_sequence_axis_wider_than_a_host_fails_in_one_line():
  # v5e:4x4 is 4 hosts of 4 chips: a sequence split 8 ways would put each row on two hosts.
  result = _aot("--config=configs/sweep.py:hawk-tiny-ntp", "--topology=v5e:4x4",
                "--config.train.batch_size=16", "--config.mesh.shape.sequence=8")
  assert result.returncode == 2
  assert ("must split the 4 processes' devices, with sequence and tensor within a process "
          "(4 devices each)") in result.stderr, result.stderr[-2000:]
