"""SIGTERM makes a training run write a checkpoint and exit 0; the same command resumes it."""
import json
import signal
import subprocess
import sys
import time

from helpers import ROOT, subprocess_env


def _command(workdir, steps):
  return [sys.executable, "-m", "birdie_jax.main", "--config=configs/base.py:tiny",
          f"--workdir={workdir}", f"--config.train.steps={steps}", "--config.train.log_every=1",
          "--config.checkpoint.every_steps=100000"]


def _logged_steps(workdir):
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def test_sigterm_checkpoints_and_exits_zero(tmp_path):
  env = subprocess_env()
  workdir = tmp_path / "run"
  process = subprocess.Popen(_command(workdir, 100_000), cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 120
  while len(_logged_steps(workdir)) < 3 and time.monotonic() < deadline:
    assert process.poll() is None, process.communicate()[0]
    time.sleep(0.2)
  sent = time.monotonic()
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=30)
  assert process.returncode == 0, output
  assert time.monotonic() - sent < 30
  assert "SIGTERM: stopping after step" in output
  last = max(_logged_steps(workdir))
  checkpoints = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert checkpoints == [last]

  resumed = subprocess.run(_command(workdir, last + 2), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f"resumed from step {last}" in resumed.stdout
  assert max(_logged_steps(workdir)) == last + 2
