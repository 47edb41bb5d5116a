"""SIGKILL at a random step: the same command resumes and logs what an uninterrupted run logs, for
the default Birdie run (model, optimizer, data position, controller state and mixture weights:
the state of a next-token run and more; test_training_loop resumes a next-token run in process);
the killed run's workdir lock is taken over with a warning."""
import json
import random
import signal
import subprocess
import sys
import time

from birdie_jax.train.metrics import MetricsWriter
from helpers import ROOT, subprocess_env

STEPS = 8
_TIMING = {"tokens_per_s", "tokens_per_s_per_device", "tflops_per_s_per_device", "step_time_s",
           "controller/eval_s", "controller/update_s", "controller/compile_s"}
# configs/base.py's default Birdie run at the tiny run's size, with a reward model small enough
# for a test; controller.schedule_scale=0.1 evaluates at steps 1 and 5.
BIRDIE = ("--config=configs/base.py", "--config.model.width=32", "--config.model.depth=2",
          "--config.model.lru_width=32", "--config.model.num_heads=2",
          "--config.data.tokenizer.kind=bytes", "--config.train.batch_size=8",
          "--config.train.seq_len=64", "--config.train.warmup_steps=2",
          "--config.train.eval_every=100", "--config.train.eval_batches=1",
          "--config.controller.num_candidates=16", "--config.controller.top_k=2",
          "--config.controller.train_steps=4", "--config.controller.hidden=16",
          "--config.controller.layers=1", "--config.controller.val_rows=1")


def _command(workdir, *config):
  return [sys.executable, "-m", "birdie_jax.main", *config,
          f"--workdir={workdir}", f"--config.train.steps={STEPS}", "--config.train.log_every=1",
          "--config.checkpoint.every_steps=2"]


def _logged(workdir) -> dict[int, dict[str, float]]:
  """Per step, the last value logged for each key (a resumed run logs steps after its checkpoint
  again); timings are left out. Only complete lines count: the file may be mid-write."""
  path = workdir / "metrics.jsonl"
  rows: dict[int, dict[str, float]] = {}
  if path.exists():
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
      row = json.loads(line)
      rows.setdefault(row.pop("step"), {}).update(
          {k: v for k, v in row.items() if k not in _TIMING})
  return rows


def _checkpoints(workdir) -> list[int]:
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def _kill_and_resume(tmp_path, kill_after, *config):
  """Runs `config` whole and killed by SIGKILL after step `kill_after` then resumed; asserts both
  log the same values at every step."""
  reference = subprocess.Popen(_command(tmp_path / "reference", *config), cwd=ROOT,
                               env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
  workdir = tmp_path / "run"
  victim = subprocess.Popen(_command(workdir, *config), cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 300  # generous: a loaded CI machine compiles slowly
  while not (max(_logged(workdir), default=0) >= kill_after and _checkpoints(workdir)):
    assert victim.poll() is None, f"the run ended before step {kill_after}"
    assert time.monotonic() < deadline
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait(timeout=30) == -signal.SIGKILL
  killed_at = max(_logged(workdir))
  assert killed_at < STEPS, "killed too late to test anything"

  resumed = subprocess.run(_command(workdir, *config), cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=180)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resumed from step " in resumed.stdout, resumed.stdout
  resumed_from = int(resumed.stdout.split("resumed from step ")[1].split()[0])
  assert 2 <= resumed_from <= killed_at and resumed_from % 2 == 0
  assert f"taking over the lock of workdir {workdir} from pid {victim.pid}" in resumed.stderr
  assert "is not running on this host" in resumed.stderr
  assert not (workdir / "lock.json").exists()
  output, _ = reference.communicate(timeout=180)
  assert reference.returncode == 0, output

  expected, got = _logged(tmp_path / "reference"), _logged(workdir)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    assert got[step] == expected[step], (f"step {step} (killed after step {killed_at}, resumed "
                                         f"from {resumed_from})")
  assert not [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  return resumed_from


def test_sigkill_of_the_birdie_run_resumes_bit_for_bit(tmp_path):
  """Killed after the controller's second evaluation (step 5) or between its first two: the
  reward history, the mixture and the data position come back from the checkpoint."""
  _kill_and_resume(tmp_path, random.randint(3, STEPS - 2), *BIRDIE)
  rows = _logged(tmp_path / "run")
  assert "reward/total" in rows[5] and "mixture_class/infilling" in rows[1]


def test_metrics_line_cut_by_a_kill_is_dropped_on_restart(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo')
  writer = MetricsWriter(str(tmp_path))
  writer.write(2, {"loss": 2.25})
  writer.close()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}]
