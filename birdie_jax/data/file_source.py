"""Documents from the user's own files: plain text (a file, or the pieces between
`data.document_separator`s, is a document) or JSON lines (one per line).

A source is a file, a directory (every file under it) or a glob. Only known text formats are read:
.txt and .md as text, .jsonl, .json and .ndjson as JSON lines (one object per line with a text
field), each also compressed (.gz, .xz, .bz2, .zst: decompressed). The other files of a directory
or glob (archives such as .tar.gz, binaries, images) are skipped and listed in the stats, so a
data folder with a README.pdf or a tarball in it does not feed their bytes to the model as text;
a single file of another kind is an error. Nothing is held in memory: `file_index` finds where the
documents are (cached on disk) and `FileTexts` reads each one when it is indexed. What indexing
leaves out (binary or JSON-array files, JSONL lines without a string text field, ...) is counted
in the stats, so every indexed document has text.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import glob
import json
import os
import pathlib

import numpy as np

from birdie_jax.data import file_index
from birdie_jax.data.documents import newline_chunks
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.file_index import FileIndex
from birdie_jax.data.file_index import index_files
from birdie_jax.errors import ConfigError
from birdie_jax import workdir

TEXT_SUFFIXES = (".txt", ".md")  # read as text; file_index.JSONL_SUFFIXES as JSON lines
KNOWN = ", ".join(TEXT_SUFFIXES + file_index.JSONL_SUFFIXES) + " (or .gz, .xz, .bz2, .zst of those)"


def default_cache_dir() -> pathlib.Path:
  """Where file indexes and decompressed copies are cached: `$BIRDIE_JAX_CACHE_DIR/data_index`,
  else `~/.cache/birdie_jax/data_index`."""
  return pathlib.Path(workdir.cache_dir("data_index"))


def is_text_file(path: pathlib.Path) -> bool:
  """Whether `path` is named like a text or JSONL file, compressed or not."""
  return file_index.text_suffix(path).lower() in TEXT_SUFFIXES + file_index.JSONL_SUFFIXES


def expand_paths(source: str) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """The text files a path, directory or glob names, sorted; and the other files it names.

  Raises:
    ConfigError: it names no text file.
  """
  path = pathlib.Path(os.path.expanduser(source))
  if path.is_file():
    if not is_text_file(path):
      raise ConfigError(f"data file {source} is not a known text format ({KNOWN})")
    return [path], []
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    what = f"data directory {source}"
  elif glob.has_magic(source):
    matches = sorted(pathlib.Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
    files, what = [p for p in matches if p.is_file()], f"data glob {source}"
  else:
    raise ConfigError(f"data path {source} does not exist")
  if not files:
    raise ConfigError(f"{what} {'contains' if path.is_dir() else 'matches'} no files")
  texts = [p for p in files if is_text_file(p)]
  if not texts:
    raise ConfigError(f"{what} has no file of a known text format ({KNOWN}): "
                      f"{len(files)} others, e.g. {files[0].name}")
  return texts, [p for p in files if not is_text_file(p)]


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

  def cut(self, pieces: int, cache_dir: str | os.PathLike[str] | None = None
          ) -> FileTexts | list[str]:
    """The only document cut into about `pieces` pieces at newlines (in memory for a JSONL line,
    whose text is read whole anyway)."""
    if self._index.jsonl[0]:
      text = self[0]
      return newline_chunks(text, max(1, -(-len(text) // pieces)))
    folder = pathlib.Path(cache_dir or default_cache_dir()).expanduser()
    return FileTexts(file_index.cut_document(self._index, pieces, folder), self._text_field)


def open_files(source: str, text_field: str, cache_dir: str | os.PathLike[str] | None = None,
               separator: str = "") -> tuple[FileTexts, SourceStats]:
  """The documents of the files `source` names, in path order, read lazily; and what was left out
  (`stats.skipped_files` lists the files of other formats as 'format').

  Args:
    separator: splits text files into documents ('' : a file is one document).

  Raises:
    ConfigError: `source` names no text file, or the cache folder cannot be written.
  """
  folder = pathlib.Path(cache_dir or default_cache_dir()).expanduser().resolve()
  paths, others = ([p for p in found if folder not in p.resolve().parents]  # not our cache
                   for found in expand_paths(source))
  index = index_files(paths, folder, text_field=text_field, separator=separator)
  skipped = tuple(("format", str(p)) for p in others) + index.stats.skipped_files
  index = dataclasses.replace(index, stats=dataclasses.replace(index.stats, skipped_files=skipped))
  return FileTexts(index, text_field), index.stats

