"""The device benchmarks (scan, train, decode) run at tiny sizes on CPU and write JSON lines."""
import json
import time

import jax
import numpy as np
import pytest
from flax import nnx

from birdie_jax.bench import decode, scan, train
from birdie_jax.config import default_config
from birdie_jax.models import build_model

_COMMON = {"date", "command", "device", "benchmark"}


def _records(path, benchmark):
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert records and all(_COMMON <= set(r) and r["benchmark"] == benchmark for r in records)
  assert all(r["device"]["card"] and r["device"]["versions"]["jax"] for r in records)
  assert all(r["command"].startswith(f"python -m birdie_jax.bench {benchmark} ") for r in records)
  return records


def test_scan_bench(tmp_path):
  results = tmp_path / "results.jsonl"
  scan.main(["--shapes", "2x24x8", "--impls", "associative,pallas", "--tilings", "4x4x1bp",
             "--copy_mib", "1", "--reps", "1", "--results", str(results)])
  records = _records(results, "scan")
  assert [r["impl"] for r in records] == ["associative", "pallas", "pallas[4x4x1bp]"]
  for r in records:
    assert r["fwd_ms"] > 0 and r["fwd_bwd_ratio"] == pytest.approx(
        r["fwd_bwd_ms"] / r["fwd_bwd_floor_ms"])
    assert r["y_rel_err"] < 1e-2 and r["grad_rel_err"] < 2e-2  # bf16 outputs


def test_scan_bench_rejects_a_bad_tiling_before_measuring(capsys):
  with pytest.raises(SystemExit):
    scan.main(["--tilings", "64x64x1,64x32x1pb", "--results", ""])
  assert "Bad tiling '64x32x1pb'" in capsys.readouterr().err


def test_train_bench(tmp_path, monkeypatch):
  """tokens/s comes from the steps the bench times, MFU from 6 x the model's parameters."""
  timed = []  # per model: the seconds of each step call, timed inside the bench's own timing
  time_steps = train._time_steps

  def counted(run, state, steps):
    timed.append([])

    def run_timed(state):
      start = time.perf_counter()
      state, loss = jax.block_until_ready(run(state))
      timed[-1].append(time.perf_counter() - start)
      return state, loss

    return time_steps(run_timed, state, steps)

  monkeypatch.setattr(train, "_time_steps", counted)
  results = tmp_path / "results.jsonl"
  batch, seq_len, vocab, steps, peak_tflops = 2, 32, 64, 3, 1.0
  train.main(["--models", "hawk:tiny", "--modes", "bidirectional", "--layers", "loop,scan",
              "--scan_impls", "pallas", "--batch", str(batch), "--seq_len", str(seq_len),
              "--vocab", str(vocab), "--steps", str(steps), "--peak_tflops", str(peak_tflops),
              "--results", str(results)])
  records = _records(results, "train")
  assert [(r["model"], r["scan"], r["layers"]) for r in records] == [
      ("hawk:tiny:bidir", "pallas", "loop"), ("hawk:tiny:bidir", "pallas", "scan")]
  cfg = default_config().model
  cfg.family, cfg.preset, cfg.bidirectional = "hawk", "tiny", True
  model = nnx.eval_shape(lambda: build_model(cfg, vocab, rngs=nnx.Rngs(0)))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert len(timed) == len(records)
  for r, seconds in zip(records, timed):
    assert len(seconds) == steps + 2  # two warm-up steps, then the timed ones
    median = float(np.median(seconds[2:]))  # each of ours lies inside one bench timing
    assert median <= r["step_ms"] / 1e3 <= 2 * median
    assert r["tokens_per_s"] == pytest.approx(batch * seq_len / (r["step_ms"] / 1e3))
    assert r["params_m"] * 1e6 == pytest.approx(num_params)
    flops_per_s = 6 * num_params * batch * seq_len / (r["step_ms"] / 1e3)
    assert r["mfu"] == pytest.approx(flops_per_s / (peak_tflops * 1e12))
    assert r["compile_s"] > 0


def test_decode_bench(tmp_path):
  results = tmp_path / "results.jsonl"
  decode.main(["--models", "hawk:tiny", "--prompt_lens", "8,32", "--batch", "2",
               "--new_tokens", "3", "--vocab", "64", "--reps", "1", "--results", str(results)])
  records = _records(results, "decode")
  assert [r["prompt_len"] for r in records] == [8, 32]
  assert all(r["ms_per_token"] > 0 and r["tokens_per_s"] > 0 for r in records)
  assert all(r["layers"] == "loop" for r in records)  # the config's default, model.scan_layers off
  # Hawk's decoding state does not grow with the prompt.
  assert records[0]["cache_gb"] == records[1]["cache_gb"]


def test_synthetic_batch_layout():
  batch = train.synthetic_batch(np.random.default_rng(0), 2, 16, 50, bidirectional=True)
  assert batch["segment_ids"][0].tolist() == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
  assert batch["positions"][0, :4].tolist() == [0, 1, 2, 3]
  assert batch["prefix_mask"][0].tolist() == [True, False, False, False] * 4
  np.testing.assert_array_equal(batch["loss_mask"], ~batch["prefix_mask"])
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
