"""Metrics to `metrics.jsonl` and TensorBoard (host 0 only), and the terminal progress line."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax

from birdie_jax.console import log_warning
from birdie_jax.workdir import as_path, is_remote, write_atomic


# Seconds between rewrites of a remote metrics.jsonl (`MetricsWriter.flush` also runs at each
# checkpoint and at the end, so a resumed run loses no row).
REMOTE_FLUSH_S = 60.0


class MetricsWriter:
  """Appends one JSON object per logged step to `metrics.jsonl` and mirrors scalars to TensorBoard.

  Object storage (a `gs://` workdir) has no appends: there the rows are kept in memory and the
  whole file is rewritten by `flush`, which `write` calls at most every `flush_every_s` seconds
  (an upload per logged step would stall training). The loop flushes at each checkpoint, so a
  run killed outright loses only rows of steps after its last checkpoint, which the resumed run
  logs again. A local file gets every row as it is written.
  """

  def __init__(self, workdir: str, *, flush_every_s: float = REMOTE_FLUSH_S):
    self._active = jax.process_index() == 0
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._remote = is_remote(workdir)
    self._flush_every_s = flush_every_s
    self._text = ""
    self._dirty = False
    self._flushed_at = time.monotonic()
    self._tb = None
    if self._active:
      if self._remote:
        path = as_path(self._path)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        self._text = text[:text.rfind("\n") + 1]
      else:
        _drop_partial_line(self._path)
      self._tb = _summary_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Records `scalars` at `step`."""
    if not self._active:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    line = json.dumps(row) + "\n"
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, float(value), int(step))
    if self._remote:
      self._text += line
      self._dirty = True
      if time.monotonic() - self._flushed_at >= self._flush_every_s:
        self.flush()
    else:
      with open(self._path, "a", encoding="utf-8") as f:
        f.write(line)
      if self._tb is not None:
        self._tb.flush()

  def flush(self) -> None:
    """Writes out every row recorded so far (remote: rewrites metrics.jsonl if rows are new)."""
    if self._active and self._dirty:
      write_atomic(self._path, self._text)
      if self._tb is not None:
        self._tb.flush()
      self._dirty = False
    self._flushed_at = time.monotonic()

  def close(self) -> None:
    """Flushes the rows and closes TensorBoard."""
    self.flush()
    if self._tb is not None:
      self._tb.close()


def _summary_writer(logdir: str):
  """tensorboardX's writer; None (with a warning) for a `gs://` folder without the
  google-cloud-storage package that tensorboardX writes there with."""
  if is_remote(logdir):
    try:
      import google.cloud.storage  # noqa: F401  pylint: disable=g-import-not-at-top
    except ImportError:
      log_warning(f"no TensorBoard events in {logdir}: tensorboardX needs the "
                  "google-cloud-storage package for gs:// folders (metrics.jsonl has every "
                  "scalar)")
      return None
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(logdir)


def _drop_partial_line(path: str) -> None:
  """Cuts a last line left unfinished by a killed run, so appended rows stay one per line."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    keep = f.seek(0, os.SEEK_END)
    while keep > 0:  # back to just after the last newline, 64 KiB at a time
      start = max(0, keep - (1 << 16))
      f.seek(start)
      newline = f.read(keep - start).rfind(b"\n")
      if newline >= 0:
        keep = start + newline + 1
        break
      keep = start
    f.truncate(keep)


def format_duration(seconds: float) -> str:
  """12.3 -> '12s', 754 -> '12m34s', 7300 -> '2h01m'."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class Throughput:
  """Tokens/s, per-device tokens/s and TFLOP/s over the steps since the last report."""

  def __init__(self, tokens_per_step: int, flops_per_token: float, start_step: int):
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self._step = start_step
    self._time = time.perf_counter()
    self.devices = jax.device_count()

  def restart(self, step: int) -> None:
    """Starts the next window now, after `step` (call after work that is not training, e.g.
    evaluation, so it does not count against the training rate)."""
    self._step, self._time = step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    """Rates since the previous call (call after the step's results are on the host)."""
    now = time.perf_counter()
    elapsed = max(now - self._time, 1e-9)
    steps = max(step - self._step, 1)
    tokens_per_s = steps * self.tokens_per_step / elapsed
    self._step, self._time = step, now
    return {"tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": tokens_per_s / self.devices,
            "tflops_per_s_per_device": tokens_per_s * self.flops_per_token / self.devices / 1e12,
            "step_time_s": elapsed / steps}


class Eta:
  """Seconds left, at the mean time per step since the first step it was asked about (so the
  compile of the first step is left out); `restart` after a rollback."""

  def __init__(self):
    self._from: tuple[int, float] | None = None

  def restart(self) -> None:
    """Measures again from the next step asked about."""
    self._from = None

  def seconds_left(self, step: int, total: int) -> float:
    """The estimate at `step` of `total` (0 at the first step asked about)."""
    if self._from is None:
      self._from = (step, time.perf_counter())
    done = step - self._from[0]
    per_step = (time.perf_counter() - self._from[1]) / done if done else 0.0
    return per_step * (total - step)


def progress_line(step: int, total: int, scalars: Mapping[str, float], eta_s: float) -> str:
  """'step 120/1000 | loss 4.123 | 12,345 tok/s | eta 2m13s'."""
  parts = [f"step {step}/{total}", f"loss {scalars['loss']:.4f}"]
  if "val_loss" in scalars:
    parts.append(f"val {scalars['val_loss']:.4f}")
  parts += [f"{scalars['tokens_per_s']:,.0f} tok/s", f"eta {format_duration(eta_s)}"]
  return " | ".join(parts)
