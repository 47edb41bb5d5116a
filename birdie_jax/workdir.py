"""A run's files (config, metrics, evaluation reports, plots, tokenizer cache) in a local folder or
in object storage (`gs://...`, the shared workdir of a multi-host TPU run), through etils.epath
as Orbax's checkpoints are. Object stores have no appends and no renames that are atomic, but an
object written in one piece appears whole, so `write_atomic` writes locally through a renamed
temporary file and remotely in one piece.

`check_writable(workdir)` is called by every program that will write into a folder, before it
computes anything: a path that is a file, a folder that cannot be made, a read-only mount (EROFS)
or a bucket without write access stops in one ConfigError line, not after hours of work.
"""
from __future__ import annotations

import io
import os
import uuid

from etils import epath

from birdie_jax.errors import ConfigError

# The folder of a pre-trained run's workdir that the fine-tuning programs write into: protocol
# files, reports, their sweeps' progress (`train/finetune_progress.py`).
FINETUNE_DIR = "finetune"


def as_path(location: str | os.PathLike[str]) -> epath.Path:
  """`location` as an epath (`~` expanded for local paths)."""
  location = os.fspath(location)
  return epath.Path(location if is_remote(location) else os.path.expanduser(location))


def is_remote(location: str | os.PathLike[str]) -> bool:
  """Whether `location` names object storage (`scheme://...`) rather than a local path."""
  return "://" in os.fspath(location)


def cache_dir(name: str) -> str:
  """`$BIRDIE_JAX_CACHE_DIR/<name>` (default root `~/.cache/birdie_jax`): caches that every run on
  this machine shares (data indexes, the scan's per-card tilings), unlike a run's own files."""
  root = os.environ.get("BIRDIE_JAX_CACHE_DIR") or "~/.cache/birdie_jax"
  return os.path.join(os.path.expanduser(root), name)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
  """Writes `data` so that readers see the old file or the new one, never a part (parent folders
  are made)."""
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  payload = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    path.write_bytes(payload)
    return
  temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  temporary.write_bytes(payload)
  os.replace(temporary, path)


def save_figure(figure, path: str | os.PathLike[str], *, dpi: int = 100) -> None:
  """Writes a matplotlib figure as a PNG with `write_atomic`."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi)
  write_atomic(path, buffer.getvalue())


def check_writable(workdir: str | os.PathLike[str], *, hint: str = "") -> None:
  """ConfigError (one line, ending in `hint`) unless files can be written in `workdir`, which is
  made if missing. Tested by writing and removing a probe file: permission bits do not tell
  (root ignores them, a read-only mount or a bucket's IAM overrides them)."""
  path = as_path(workdir)
  suffix = f"; {hint}" if hint else ""
  if not is_remote(path) and path.exists() and not path.is_dir():
    raise ConfigError(f"workdir {workdir} is a file, not a folder{suffix}")
  probe = path / f".write-probe-{uuid.uuid4().hex}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    if not isinstance(e, OSError) and not is_remote(path):
      raise  # object-store clients raise their own types (403); local errors are OSErrors
    reason = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
    raise ConfigError(f"cannot write into workdir {workdir} ({reason}){suffix}") from None
