"""Documents from the user's own files: plain text (one document per file) or JSONL (one per line).

A source is a file, a directory (every file under it) or a glob. `.gz`, `.xz`, `.bz2` and `.zst`
files are decompressed; `.jsonl` / `.jsonl.gz` (...) files hold one JSON object per line with a
text field. Nothing is held in memory: `file_index` finds where the documents are (cached on disk)
and `FileTexts` reads each one when it is indexed. What indexing leaves out is counted in the
stats; a JSONL line without a non-empty string text field is only found out when read, and reads
as ''.
"""
from __future__ import annotations

from collections.abc import Sequence
import glob
import json
import os
import pathlib

import numpy as np

from birdie_jax.data.documents import SourceStats
from birdie_jax.data.file_index import FileIndex
from birdie_jax.data.file_index import index_files
from birdie_jax.errors import ConfigError


def default_cache_dir() -> pathlib.Path:
  """Where file indexes and decompressed copies are cached: `$BIRDIE_JAX_CACHE_DIR/data_index`,
  else `~/.cache/birdie_jax/data_index`."""
  root = os.environ.get("BIRDIE_JAX_CACHE_DIR") or "~/.cache/birdie_jax"
  return pathlib.Path(root).expanduser() / "data_index"


def expand_paths(source: str) -> list[pathlib.Path]:
  """The files a path, directory or glob names, sorted; ConfigError if there are none."""
  path = pathlib.Path(os.path.expanduser(source))
  if path.is_file():
    return [path]
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
      raise ConfigError(f"data directory {source} contains no files")
    return files
  if glob.has_magic(source):
    matches = sorted(pathlib.Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
      raise ConfigError(f"data glob {source} matches no files")
    return files
  raise ConfigError(f"data path {source} does not exist")


def _text(data: bytes) -> str:
  """`data` as text, or '' if it is not UTF-8 or is blank."""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    return ""
  return "" if text.isspace() else text


def _jsonl_text(data: bytes, text_field: str) -> str:
  """The text field of a JSONL line, or '' if it is not JSON or has no non-empty string there."""
  try:
    record = json.loads(data.decode("utf-8"))
  except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep or a too long number
    return ""
  text = record.get(text_field) if isinstance(record, dict) else None
  return text if isinstance(text, str) and not text.isspace() else ""


class FileTexts(Sequence[str]):
  """The documents of a `FileIndex`, each read from its file (and parsed) when indexed.

  Pickles small (into Grain workers): the index is memory-mapped again where it is first read.
  """

  def __init__(self, index: FileIndex, text_field: str):
    self._index = index
    self._text_field = text_field
    self._bounds: np.ndarray | None = None

  def __getstate__(self) -> dict[str, object]:
    return {**self.__dict__, "_bounds": None}

  def __len__(self) -> int:
    return self._index.stats.documents

  def __getitem__(self, i: int) -> str:
    """Document i, read now; '' if it turns out to hold no text."""
    if not -len(self) <= i < len(self):
      raise IndexError(f"document {i} of {len(self)}")
    i %= len(self)
    if self._bounds is None:
      self._bounds = np.load(self._index.bounds_path, mmap_mode="r")
    start, end = (int(x) for x in self._bounds[i])
    j = self._index.file_of(i)
    with open(self._index.files[j], "rb") as f:
      f.seek(start)
      data = f.read(end - start)
    return _jsonl_text(data, self._text_field) if self._index.jsonl[j] else _text(data)


def open_files(source: str, text_field: str, cache_dir: str | os.PathLike[str] | None = None
               ) -> tuple[FileTexts, SourceStats]:
  """The documents of the files `source` names, in path order, read lazily; and what was left out.

  Raises:
    ConfigError: `source` names no file, or the cache folder cannot be written.
  """
  folder = pathlib.Path(cache_dir or default_cache_dir()).expanduser().resolve()
  paths = [p for p in expand_paths(source) if folder not in p.resolve().parents]  # not our cache
  index = index_files(paths, folder)
  return FileTexts(index, text_field), index.stats
