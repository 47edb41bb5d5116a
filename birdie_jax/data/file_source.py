"""Documents from the user's own files: plain text (one document per file) or JSONL (one per line).

A source is a file, a directory (every file under it) or a glob. `.gz`, `.xz` and `.bz2` files are
decompressed; `.jsonl` / `.jsonl.gz` (...) files hold one JSON object per line with a text field.
Empty documents, non-UTF-8 files or lines and unparsable lines are skipped and counted.
"""
from __future__ import annotations

import bz2
from collections.abc import Iterator
import glob
import gzip
import json
import lzma
import os
import pathlib

from birdie_jax.data.documents import SourceStats
from birdie_jax.errors import ConfigError

_DECOMPRESS = {".gz": gzip.decompress, ".xz": lzma.decompress, ".bz2": bz2.decompress}
_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError)


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


def _is_jsonl(path: pathlib.Path) -> bool:
  suffixes = path.suffixes[-2:] if path.suffix in _DECOMPRESS else path.suffixes[-1:]
  return bool(suffixes) and suffixes[0] == ".jsonl"


def _jsonl_texts(data: bytes, text_field: str, counts: dict[str, int]) -> Iterator[str]:
  """The text field of every JSONL line that has one; bad lines are counted."""
  for line in data.splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
      counts["undecodable"] += 1
      continue
    except json.JSONDecodeError:
      counts["malformed"] += 1
      continue
    text = record.get(text_field) if isinstance(record, dict) else None
    if isinstance(text, str):
      yield text
    else:
      counts["malformed"] += 1


def read_files(source: str, text_field: str) -> tuple[list[str], SourceStats]:
  """All non-empty documents of the files `source` names, in path order, with what was skipped."""
  counts = dict(empty=0, undecodable=0, malformed=0, unreadable=0)
  documents = []
  for path in expand_paths(source):
    try:
      data = path.read_bytes()
      if path.suffix in _DECOMPRESS:
        data = _DECOMPRESS[path.suffix](data)
    except _DECOMPRESS_ERRORS:
      counts["unreadable"] += 1
      continue
    if _is_jsonl(path):
      texts = list(_jsonl_texts(data, text_field, counts))
    else:
      try:
        texts = [data.decode("utf-8")]
      except UnicodeDecodeError:
        counts["undecodable"] += 1
        continue
    for text in texts:
      if text.strip():
        documents.append(text)
      else:
        counts["empty"] += 1
  return documents, SourceStats(documents=len(documents), **counts)
