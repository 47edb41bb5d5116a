"""`python -m birdie_jax.bench objectives` runs at tiny size and writes well-formed JSON."""
import json
import subprocess
import sys

from helpers import ROOT


def _bench(*args):
  return subprocess.run([sys.executable, "-m", "birdie_jax.bench", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


def test_objectives_bench_tiny(tmp_path):
  results = tmp_path / "bench" / "results.jsonl"
  run = _bench("objectives", "--tokenizer", "bytes", "--seq_len", "128", "--seconds", "0.02",
               "--documents", "12", "--batch_size", "2", "--results", str(results))
  assert run.returncode == 0, run.stderr
  last = json.loads(run.stdout.strip().splitlines()[-1])
  assert last["tokens_per_s_per_core"] > 0 and last["text_tokens_per_s_per_core"] > 0
  assert set(last["per_objective"]) == {"next_token_prediction", "prefix_lm", "selective_copying",
                                        "copying", "deshuffling", "infilling", "autoencoding",
                                        "birdie_mixture"}
  assert all(r["examples_per_s"] > 0 for r in last["per_objective"].values())
  record = json.loads(results.read_text().splitlines()[-1])
  assert {"date", "command", "host"} <= set(record) and record["host"]["versions"]["numpy"]
  assert record["command"].startswith("python -m birdie_jax.bench objectives --tokenizer bytes")
  assert record["tokens_per_s_per_core"] == last["tokens_per_s_per_core"]


def test_unknown_subcommand_prints_usage():
  run = _bench("nonsense")
  assert run.returncode == 2 and "objectives" in run.stderr
