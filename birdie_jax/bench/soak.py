"""`python -m birdie_jax.bench soak`: a long tiny training run with frequent checkpoints, watched
for host-memory and disk growth (Linux: reads /proc).

Starts `python -m birdie_jax.main --config=configs/base.py:tiny` for `--steps` steps with a
checkpoint every `--every` steps (kept: `--max_to_keep`) in a fresh `--workdir`, and every
`--interval` seconds samples the step reached (metrics.jsonl), the process's resident memory
(/proc/<pid>/status: VmRSS, and RssAnon, its heap part: VmRSS also counts mapped library pages,
which come and go with the machine's memory pressure) and the disk use of `checkpoints/` and of
the whole workdir. Prints a row per tenth of the run and a summary (with the RssAnon trend over
the second half, per checkpoint written), appends one JSON line to `--results`, and exits 1 when
  - RssAnon at the end exceeds RssAnon after the warm-up (the first `--warmup` share of the
    steps) by more than `--rss_growth_mb`, or its trend exceeds `--trend_kb` per checkpoint, or
  - `checkpoints/` ever held more than `max_to_keep` + 1 step folders (one may be being written)
    or more than (`max_to_keep` + 1) x 1.5 x the size of the final checkpoint.
metrics.jsonl and TensorBoard grow by design (one row per `--log_every` steps): reported, not bound.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

from birdie_jax import cli
from birdie_jax.bench import harness

_ROOT = pathlib.Path(__file__).resolve().parents[2]  # where configs/ is
_CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


def memory_mb(pid: int) -> dict[str, float] | None:
  """VmRSS and RssAnon of process `pid` in MiB (None once it has exited)."""
  try:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
  except (FileNotFoundError, ProcessLookupError):
    return None
  fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
  if "VmRSS" not in fields or "RssAnon" not in fields:
    return None
  return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
          "anon_mb": int(fields["RssAnon"].split()[0]) / 1024}


def disk_mb(path: pathlib.Path) -> float:
  """Disk blocks in use under `path` in MiB, like `du` (files removed while walking are skipped)."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.lstat(os.path.join(root, name)).st_blocks * 512
      except FileNotFoundError:
        pass
  return total / 2**20


def last_step(workdir: pathlib.Path) -> int:
  """The step of the last complete row of metrics.jsonl (0 before the first)."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  with path.open("rb") as f:
    f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
    lines = f.read().split(b"\n")[:-1]
  return json.loads(lines[-1])["step"] if lines and lines[-1].startswith(b"{") else 0


def step_folders(workdir: pathlib.Path) -> int:
  """Checkpoint step folders, finished or being written (`<step>.orbax-checkpoint-tmp`)."""
  folder = workdir / "checkpoints"
  return sum(1 for p in folder.iterdir() if p.name.split(".")[0].isdigit()) if folder.exists() else 0


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the training process to the end and returns the samples' summary."""
  workdir = pathlib.Path(args.workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, "-m", "birdie_jax.main", "--config=configs/base.py:tiny",
             f"--workdir={workdir}", f"--config.train.steps={args.steps}",
             f"--config.train.log_every={args.log_every}", "--config.train.eval_every=100",
             f"--config.checkpoint.every_steps={args.every}",
             f"--config.checkpoint.max_to_keep={args.max_to_keep}"]
  env = {"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
         **{k: os.environ[k] for k in _CACHE_ENV if k in os.environ}}
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=_ROOT, env=env, stdout=subprocess.DEVNULL)
  samples, next_row = [], 0
  columns = ("step", "seconds", "rss_mb", "anon_mb", "ckpt_mb", "workdir_mb", "folders")
  print(" ".join(f"{c:>10}" for c in columns))
  while process.poll() is None:
    memory = memory_mb(process.pid)
    sample = {"step": last_step(workdir), "seconds": time.perf_counter() - start, **(memory or {}),
              "ckpt_mb": disk_mb(workdir / "checkpoints"), "workdir_mb": disk_mb(workdir),
              "folders": step_folders(workdir)}
    if memory is not None and sample["step"] > 0:
      samples.append(sample)
      if sample["step"] >= next_row:
        print(" ".join(f"{sample[c]:>10.{0 if c in ('step', 'folders') else 1}f}"
                       for c in columns), flush=True)
        next_row = sample["step"] + args.steps // 10
    time.sleep(args.interval)
  if process.returncode != 0 or not samples:
    raise SystemExit(f"the training process failed (exit {process.returncode})")
  warm = [s for s in samples if s["step"] >= args.warmup * args.steps] or samples
  late = samples[len(samples) // 2:]  # the trend of the second half, per checkpoint written
  slope = np.polyfit([s["step"] for s in late], [s["anon_mb"] for s in late], 1)[0]
  one_checkpoint = disk_mb(workdir / "checkpoints" / str(args.steps))
  return {"steps": args.steps, "every": args.every, "max_to_keep": args.max_to_keep,
          "seconds": round(time.perf_counter() - start, 1), "samples": len(samples),
          "rss_first_mb": round(samples[0]["rss_mb"], 1),
          "rss_max_mb": round(max(s["rss_mb"] for s in samples), 1),
          "rss_end_mb": round(samples[-1]["rss_mb"], 1),
          "anon_first_mb": round(samples[0]["anon_mb"], 1),
          "anon_after_warmup_mb": round(warm[0]["anon_mb"], 1),
          "anon_max_mb": round(max(s["anon_mb"] for s in samples), 1),
          "anon_end_mb": round(samples[-1]["anon_mb"], 1),
          "anon_trend_kb_per_checkpoint": round(slope * args.every * 1024, 1),
          "checkpoint_mb": round(one_checkpoint, 3),
          "checkpoints_max_mb": round(max(s["ckpt_mb"] for s in samples), 3),
          "step_folders_max": max(s["folders"] for s in samples),
          "workdir_end_mb": round(disk_mb(workdir), 2),
          "metrics_jsonl_mb": round((workdir / "metrics.jsonl").stat().st_size / 2**20, 3)}


def check(summary: dict[str, Any], rss_growth_mb: float, trend_kb: float) -> list[str]:
  """The bounds the summary breaks (empty when memory and checkpoint disk stayed bounded)."""
  problems = []
  growth = summary["anon_end_mb"] - summary["anon_after_warmup_mb"]
  if growth > rss_growth_mb:
    problems.append(f"RssAnon grew by {growth:.0f} MiB after the warm-up (bound {rss_growth_mb:g})")
  if summary["anon_trend_kb_per_checkpoint"] > trend_kb:
    problems.append(f"RssAnon grows {summary['anon_trend_kb_per_checkpoint']:.0f} KiB per "
                    f"checkpoint (bound {trend_kb:g})")
  keep = summary["max_to_keep"] + 1
  if summary["step_folders_max"] > keep:
    problems.append(f"{summary['step_folders_max']} checkpoint folders at once (bound {keep})")
  if summary["checkpoints_max_mb"] > keep * 1.5 * summary["checkpoint_mb"]:
    problems.append(f"checkpoints/ reached {summary['checkpoints_max_mb']:.2f} MiB (bound "
                    f"{keep * 1.5 * summary['checkpoint_mb']:.2f})")
  return problems


def main(argv: list[str]) -> None:
  """Parses flags, runs the soak, prints and records the summary; exits 1 if a bound broke."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench soak", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=cli.positive_int, default=3000)
  parser.add_argument("--every", type=cli.positive_int, default=5, help="steps between checkpoints")
  parser.add_argument("--max_to_keep", type=cli.positive_int, default=3)
  parser.add_argument("--log_every", type=cli.positive_int, default=10)
  parser.add_argument("--interval", type=cli.positive_float, default=1.0,
                      help="seconds between samples")
  parser.add_argument("--warmup", type=float, default=0.1, help="share of steps before the "
                      "memory baseline")
  parser.add_argument("--rss_growth_mb", type=cli.positive_float, default=64.0)
  parser.add_argument("--trend_kb", type=cli.positive_float, default=256.0,
                      help="bound on the RssAnon trend "
                      "per checkpoint (Orbax 0.12.8 itself keeps about 1 KiB per array per save)")
  parser.add_argument("--workdir", default="/tmp/birdie_jax_soak")
  parser.add_argument("--results", default=harness.RESULTS, help="'' to skip")
  args = parser.parse_args(argv)
  summary = run(args)
  print(json.dumps(summary, indent=1))
  problems = check(summary, args.rss_growth_mb, args.trend_kb)
  harness.append_results([{**summary, "bounded": not problems}], "soak", argv, args.results)
  if problems:
    raise SystemExit("soak: " + "; ".join(problems))
  print("soak: memory and checkpoint disk stayed bounded")
