"""Stops that must not lose work or train twice: a second start on a running workdir refuses in
one line, SIGINT saves and exits 0 like SIGTERM, a data file that vanishes mid-run stops the run
at that step with a checkpoint of the step before, and stale workdir locks are taken over."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import grain
import pytest

from birdie_jax.data import lookahead
from birdie_jax.data.lookahead import Lookahead
from birdie_jax.errors import ConfigError, TrainingError
from birdie_jax.train.workdir_lock import LOCK_FILE, WorkdirLock, hold_workdir
from helpers import ROOT, subprocess_env


def _command(workdir, steps, *overrides):
  return [sys.executable, "-m", "birdie_jax.main", "--config=configs/base.py:tiny",
          f"--workdir={workdir}", f"--config.train.steps={steps}", "--config.train.log_every=1",
          "--config.checkpoint.every_steps=100000", *overrides]


def _logged_steps(workdir):
  """The steps of the complete training rows of metrics.jsonl, in file order."""
  path = workdir / "metrics.jsonl"
  lines = path.read_text().split("\n")[:-1] if path.exists() else []
  return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def _checkpoints(workdir):
  folder = workdir / "checkpoints"
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _wait_for_step(process, workdir, step):
  deadline = time.monotonic() + 180
  while len(_logged_steps(workdir)) < step:
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline
    time.sleep(0.1)


def _error_lines(stderr):
  assert "Traceback" not in stderr, stderr
  return [line for line in stderr.splitlines() if line.startswith("birdie_jax: error: ")]


def test_second_start_refuses_and_sigint_saves_and_resumes(tmp_path):
  workdir, env = tmp_path / "run", subprocess_env()
  first = subprocess.Popen(_command(workdir, 100_000), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  _wait_for_step(first, workdir, 2)
  second = subprocess.run(_command(workdir, 100_000), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
  assert second.returncode == 2, second.stderr
  (line,) = _error_lines(second.stderr)
  assert re.fullmatch(rf"birdie_jax: error: workdir {workdir} is in use by pid {first.pid} on "
                      rf"host {re.escape(socket.gethostname())} \(started .* UTC, heartbeat \d+s "
                      r"ago\); stop that job first, or use another --workdir", line), line
  assert first.poll() is None, "the second start stopped the first"

  first.send_signal(signal.SIGINT)
  output, _ = first.communicate(timeout=60)
  assert first.returncode == 0, output
  assert "Traceback" not in output
  last = int(re.search(r"SIGINT: stopping after step (\d+); checkpoint written", output)[1])
  assert _checkpoints(workdir) == [last]
  assert _logged_steps(workdir) == list(range(1, last + 1))  # each step once: nothing twice
  assert not (workdir / LOCK_FILE).exists()

  resumed = subprocess.run(_command(workdir, last + 2), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f"resumed from step {last}" in resumed.stdout
  assert _logged_steps(workdir) == list(range(1, last + 3))


def test_data_file_removed_mid_run_stops_at_that_step_with_a_checkpoint(tmp_path):
  data, workdir = tmp_path / "data", tmp_path / "run"
  data.mkdir()
  for i in range(24):  # ~2.4 KB: an epoch every few steps, so every file is read again soon
    (data / f"doc{i:02d}.txt").write_text(f"document {i} " + "the quick brown fox. " * (3 + i % 4))
  env = subprocess_env(BIRDIE_JAX_CACHE_DIR=str(tmp_path / "cache"))
  run = subprocess.Popen(_command(workdir, 100_000, f"--config.data.source={data}",
                                  "--config.data.read_retries=1", "--config.data.val_fraction=0.2",
                                  "--config.checkpoint.every_steps=2"),
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
  _wait_for_step(run, workdir, 2)
  for i in range(0, 24, 3):  # more than the validation split holds: training reads some
    (data / f"doc{i:02d}.txt").unlink()
  try:
    stdout, stderr = run.communicate(timeout=120)
  finally:
    run.kill()
  assert run.returncode == 2, stdout + stderr
  (line,) = _error_lines(stderr)
  match = re.fullmatch(r"birdie_jax: error: stopped in step (\d+): reading the training data "
                       r"failed 2 time\(s\) \(data\.read_retries=1\): FileNotFoundError: .*doc\d\d"
                       r"\.txt'; checkpoint (\d+) holds the last good step, the same command "
                       r"resumes from it", line)
  assert match, line
  failed, saved = int(match[1]), int(match[2])
  assert saved == failed - 1 == max(_checkpoints(workdir))
  assert _logged_steps(workdir) == list(range(1, failed))  # the failing step was not trained
  assert not (workdir / LOCK_FILE).exists()


def _write_lock(workdir, **fields):
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
            "heartbeat": time.time(), "token": "theirs", **fields}
  (workdir / LOCK_FILE).write_text(json.dumps(record))


def _dead_pid():
  child = subprocess.Popen(["true"])
  child.wait()
  return child.pid


def test_stale_locks_are_taken_over_and_live_ones_refused(tmp_path, capsys):
  _write_lock(tmp_path, pid=_dead_pid())
  with hold_workdir(str(tmp_path), stale_s=600):
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(ConfigError, match=rf"^workdir {tmp_path} is in use by pid {os.getpid()}"):
      WorkdirLock(str(tmp_path), stale_s=600).acquire()  # this very job holds it
  assert not (tmp_path / LOCK_FILE).exists()
  assert "is not running on this host" in capsys.readouterr().err

  _write_lock(tmp_path, host="elsewhere", pid=1)  # another host's pid cannot be checked
  with pytest.raises(ConfigError, match=r"in use by pid 1 on host elsewhere .*heartbeat 0s ago"):
    WorkdirLock(str(tmp_path), stale_s=600).acquire()
  _write_lock(tmp_path, host="elsewhere", pid=1, heartbeat=time.time() - 700)
  with hold_workdir(str(tmp_path), stale_s=600):
    pass
  assert "its heartbeat is 700s old (checkpoint.lock_stale_s=600)" in capsys.readouterr().err

  (tmp_path / LOCK_FILE).write_text("{")  # cut short: no job can be named, so none holds it
  with hold_workdir(str(tmp_path), stale_s=600):
    pass
  assert "the lock file is unreadable" in capsys.readouterr().err


def test_heartbeat_is_refreshed_while_held(tmp_path):
  lock = WorkdirLock(str(tmp_path), stale_s=1.0)  # beats every 0.5 s
  lock.acquire()
  first = json.loads((tmp_path / LOCK_FILE).read_text())
  time.sleep(1.3)
  later = json.loads((tmp_path / LOCK_FILE).read_text())
  lock.release()
  assert later["heartbeat"] > first["heartbeat"] and later["token"] == first["token"]
  assert not (tmp_path / LOCK_FILE).exists()


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match=r"^cannot lock workdir .*file/run \(NotADirectoryError: "):
    WorkdirLock(str(tmp_path / "file" / "run"), stale_s=600).acquire()


def _flaky(failures):
  """range(20) as a Grain iterator whose element 5 fails to read `failures` times first."""

  def read(x):
    if x == 5 and failures:
      failures.pop()
      raise FileNotFoundError(f"[Errno 2] No such file or directory: 'doc{x}.txt'")
    return x

  return iter(grain.MapDataset.range(20).map(read).to_iter_dataset())


def test_read_errors_are_retried_then_raised_by_the_batch_that_needs_them(monkeypatch):
  monkeypatch.setattr(lookahead, "_FIRST_RETRY_S", 0.0)
  retried = Lookahead(_flaky([1, 1]), retries=2)
  assert [next(retried) for _ in range(8)] == list(range(8))

  failing = Lookahead(_flaky([1] * 3), retries=2)
  assert [next(failing) for _ in range(5)] == list(range(5))
  before = failing.get_state()
  failing.prefetch()  # reads element 5 ahead: the error waits for the step that needs it
  assert failing.get_state() == before
  with pytest.raises(TrainingError, match=r"^reading the training data failed 3 time\(s\) "
                     r"\(data\.read_retries=2\): FileNotFoundError: .*doc5\.txt'$"):
    next(failing)
  failing.unread()  # nothing was read: the position stays before element 5
  assert failing.get_state() == before
  assert next(failing) == 5  # the file is back: the same element


def test_unread_puts_back_the_last_element():
  ahead = Lookahead(_flaky([]))
  assert [next(ahead) for _ in range(3)] == [0, 1, 2]
  ahead.prefetch()
  ahead.unread()
  assert [next(ahead) for _ in range(2)] == [2, 3]
