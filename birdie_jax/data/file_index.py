"""A compact, cached index of where the documents of the user's text and JSONL files are.

A text file is one document (its whole content), or with a separator (`data.document_separator`,
e.g. '\\n\\n' or '<|endoftext|>', matched exactly) the non-blank pieces between its occurrences.
A JSONL file's (.jsonl, .json, .ndjson) documents are its lines, split at '\\n', '\\r' or
'\\r\\n' as `bytes.splitlines` does, found with numpy in 16 MiB chunks; each line is parsed here, so
what is indexed is what reads as text. Blank lines are left out. Left out and counted: files
holding a NUL byte (binary, whatever their name), JSON files that are one array rather than JSON
lines, text files that are empty, blank or not UTF-8, lines that are not UTF-8, not a JSON object
('{...}'), without a string text field or with a blank one, and compressed files that do not
decompress. `cut_document` cuts a source's only document into pieces (for a validation split).

`.gz`, `.xz`, `.bz2` and `.zst` files cannot be read at random offsets, so each is decompressed
once into the cache folder. Each file's index is cached there under its absolute path, size and
mtime, and so is the concatenated index of a list of files (memory-mapped by readers), so a restart
or a second process does not rescan. Every cache write is atomic (a temporary file, then
`os.replace`). Entries of files that changed stay until the folder is deleted.
"""
from __future__ import annotations

import bisect
import bz2
import codecs
from collections.abc import Iterable, Iterator
import concurrent.futures
import contextlib
import dataclasses
import gzip
import hashlib
import json
import lzma
import os
import pathlib
import tempfile
import time
from typing import BinaryIO
import zlib

import numpy as np
import zstandard

from birdie_jax.console import log_progress
from birdie_jax.data.documents import SourceStats
from birdie_jax.errors import ConfigError

_FORMAT = 2  # bump when the index format or what it leaves out changes
_CHUNK = 1 << 24
# Files indexed at once: reading, decompressing and numpy release the GIL.
_THREADS = min(4, os.cpu_count() or 1)
_UNREADABLE = (OSError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError)
_SPACE = np.zeros(256, bool)  # what bytes.strip() strips
_SPACE[list(b" \t\n\r\x0b\x0c")] = True
_COUNTS = ("empty", "undecodable", "malformed", "unreadable", "no_text", "binary",
           "json_array")  # SourceStats fields of the skipped
_WHOLE_FILE = ("binary", "json_array")  # causes named file by file in `SourceStats.skipped_files`
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")  # JSON lines, one document per line


class _Unreadable(Exception):
  """A data file could not be read or decompressed."""


class _ZstdFile:
  """The decompressed bytes of a .zst file, every frame of it (as `zstd -d` gives them), read in
  pieces of any size; EOFError if the last frame is cut short. Frames written with `--long` (up to
  2 GiB windows) are accepted."""

  def __init__(self, path: pathlib.Path, mode: str = "rb"):
    assert mode == "rb"
    self._file = open(path, "rb")
    self._context = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    self._frame = self._context.decompressobj()
    self._in_frame = False  # part of a frame has been read, but not its end

  def read(self, size: int) -> bytes:
    """The output of the next `min(size, 1 MiB)` compressed bytes (a few MiB of text; the frames
    bound nothing, so the input is read in small pieces); b'' at the end of the file."""
    while True:
      data = self._file.read(min(size, 1 << 20))
      if not data:
        if self._in_frame:
          raise EOFError(f"{self._file.name} ends inside a zstd frame")
        return b""
      out = []
      while data:
        self._in_frame = True
        out.append(self._frame.decompress(data))
        data = b""
        if self._frame.eof:  # the next frame starts in what is left
          data = self._frame.unused_data
          self._frame = self._context.decompressobj()
          self._in_frame = False
      if any(out):
        return b"".join(out)

  def __enter__(self) -> _ZstdFile:
    return self

  def __exit__(self, *exc_info) -> None:
    self._file.close()


_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open, ".zst": _ZstdFile}


@dataclasses.dataclass(frozen=True)
class FileIndex:
  """Document i is bytes `bounds[i]` = [start, end) of `files[j]`, j = `file_of(i)`."""

  bounds_path: str  # .npy of int64 [documents, 2], memory-mapped by readers
  files: tuple[str, ...]  # the files the bounds refer to (the cached copy of a compressed one)
  jsonl: tuple[bool, ...]  # whether each file's documents are JSONL lines
  file_ends: tuple[int, ...]  # cumulative document counts
  stats: SourceStats  # the documents indexed and those left out

  def file_of(self, i: int) -> int:
    """The position in `files` of document i's file: the first j with file_ends[j] > i."""
    return bisect.bisect_right(self.file_ends, i)


def is_jsonl(path: pathlib.Path) -> bool:
  """Whether `path` is named like a JSONL file (.jsonl, .json or .ndjson, or one of those
  compressed: .gz / .xz / .bz2 / .zst)."""
  return text_suffix(path) in JSONL_SUFFIXES


def text_suffix(path: pathlib.Path) -> str:
  """The suffix of `path` before a compression suffix: '.txt' for 'a.txt.gz', '.tar' for
  'a.tar.gz', '' for 'a.gz'."""
  suffixes = path.suffixes[-2:] if path.suffix in _OPENERS else path.suffixes[-1:]
  return suffixes[0] if len(suffixes) == (2 if path.suffix in _OPENERS else 1) else ""


def _key(*parts: object) -> str:
  return hashlib.sha256(json.dumps([_FORMAT, *parts]).encode()).hexdigest()[:32]


@contextlib.contextmanager
def atomic_file(path: pathlib.Path) -> Iterator[BinaryIO]:
  """A temporary file beside `path` that replaces it when the block ends without an exception."""
  with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp",
                                   delete=False) as f:
    try:
      yield f
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.replace(f.name, path)


def _lines(buf: bytes) -> tuple[np.ndarray, int, int]:
  """[start, end) of the lines of `buf` kept as documents; and the undecodable and malformed."""
  a = np.frombuffer(buf, np.uint8)
  seps = np.flatnonzero(a <= 13)  # few bytes are: a fast first pass
  seps = seps[(a[seps] == 10) | (a[seps] == 13)]
  starts = np.concatenate(([0], seps + 1))
  ends = np.append(seps, len(buf))
  starts, ends = starts[ends > starts], ends[ends > starts]
  first, last = a[starts], a[ends - 1]
  blank = np.zeros(len(starts), bool)
  for k in np.flatnonzero(_SPACE[first] | _SPACE[last]):  # rare: strip the line in Python
    line = buf[starts[k]:ends[k]].strip()
    if line:
      first[k], last[k] = line[0], line[-1]
    else:
      blank[k] = True
  decodable = np.ones(len(starts), bool)
  if not buf.isascii():
    try:
      buf.decode("utf-8")
    except UnicodeDecodeError:  # a chunk with a bad line: decode its lines one by one
      for k in range(len(starts)):
        try:
          buf[starts[k]:ends[k]].decode("utf-8")
        except UnicodeDecodeError:
          decodable[k] = False
  shaped = (first == ord("{")) & (last == ord("}"))
  keep = ~blank & decodable & shaped
  bounds = np.stack([starts[keep], ends[keep]], axis=1).astype(np.int64, copy=False)
  return bounds, int(np.sum(~blank & ~decodable)), int(np.sum(~blank & decodable & ~shaped))


def _records(buf: bytes, bounds: np.ndarray, text_field: str) -> tuple[np.ndarray, dict[str, int]]:
  """The lines of `bounds` that parse to an object with a non-blank string `text_field`; and
  the others counted: malformed (not JSON), no_text (no string field there), empty (blank)."""
  keep, counts = np.zeros(len(bounds), bool), dict(malformed=0, no_text=0, empty=0)
  for k, (start, end) in enumerate(bounds.tolist()):
    try:
      record = json.loads(buf[start:end].decode("utf-8"))
    except (ValueError, RecursionError):  # not JSON, too deep or a too long number
      counts["malformed"] += 1
      continue
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
      counts["no_text"] += 1
    elif not text.strip():
      counts["empty"] += 1
    else:
      keep[k] = True
  return bounds[keep], counts


def _buffers(chunks: Iterable[bytes]) -> Iterator[bytes]:
  """`chunks` joined again into buffers that end just after a line break (but the last)."""
  pending = []
  for chunk in chunks:
    cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
    if not cut:  # a line longer than a chunk: keep reading
      pending.append(chunk)
      continue
    yield b"".join([*pending, memoryview(chunk)[:cut]])
    pending = [chunk[cut:]]
  yield b"".join(pending)


def _separated(chunks: Iterable[bytes], separator: bytes) -> Iterator[bytes]:
  """`chunks` joined again into buffers that end just after a `separator` (but the last); one
  that spans two chunks is found too."""
  pending, carry, keep = [], b"", len(separator) - 1
  for chunk in chunks:
    window = carry + chunk  # carry: the last bytes of `pending`, where a separator may start
    cut = window.rfind(separator)
    if cut < 0:
      pending.append(chunk)
      carry = window[len(window) - keep:] if keep else b""
      continue
    cut += len(separator) - len(carry)
    yield b"".join([*pending, chunk[:cut]])
    pending = [chunk[cut:]]
    carry = chunk[max(cut, len(chunk) - keep):] if keep else b""
  yield b"".join(pending)


_NONE = np.zeros((0, 2), np.int64)


def _scan_jsonl(chunks: Iterable[bytes], text_field: str = "text"
                ) -> tuple[np.ndarray, dict[str, int]]:
  """The bounds of the documents of a JSONL stream; none if it holds a NUL byte or is one JSON
  array ('[' ... ']')."""
  found, counts, offset, ends = [], {}, 0, [b"", b""]
  for buf in _buffers(chunks):
    if b"\0" in buf:
      return _NONE, dict(binary=1)
    bounds, undecodable, malformed = _lines(buf)
    bounds, more = _records(buf, bounds, text_field)
    for name, n in [("undecodable", undecodable), ("malformed", malformed), *more.items()]:
      counts[name] = counts.get(name, 0) + n
    found.append(bounds + offset)
    offset += len(buf)
    stripped = buf.strip()
    if stripped:
      ends = [ends[0] or stripped[:1], stripped[-1:]]
  if ends == [b"[", b"]"]:
    return _NONE, dict(json_array=1)
  return np.concatenate(found), counts


def _pieces(buf: bytes, separator: bytes, offset: int) -> list[tuple[int, int]]:
  """[start, end) of the non-blank pieces of `buf` (valid UTF-8) between `separator`s."""
  found, start = [], offset
  for piece in buf.split(separator):
    if piece.strip() and (piece.isascii() or not piece.decode("utf-8").isspace()):
      found.append((start, start + len(piece)))
    start += len(piece) + len(separator)
  return found


def _scan_text(chunks: Iterable[bytes], separator: bytes = b""
               ) -> tuple[np.ndarray, dict[str, int]]:
  """One document spanning the whole stream, or with a `separator` the non-blank pieces between
  its occurrences; none if it is blank, not UTF-8 or holds a NUL byte (binary)."""
  decoder, blank, size, found = codecs.getincrementaldecoder("utf-8")(), True, 0, []
  try:
    for buf in _separated(chunks, separator) if separator else chunks:
      if b"\0" in buf:
        return _NONE, dict(binary=1)
      text = decoder.decode(buf)
      if separator:
        found += _pieces(buf, separator, size)
      else:
        blank = blank and not text.strip()
      size += len(buf)
    decoder.decode(b"", final=True)
  except UnicodeDecodeError:
    return _NONE, dict(undecodable=1)
  if separator and found:
    return np.array(found, np.int64), {}
  if blank or separator:
    return _NONE, dict(empty=1)
  return np.array([[0, size]], np.int64), {}


def _chunks(path: pathlib.Path, copy: BinaryIO | None) -> Iterator[bytes]:
  """The (decompressed) bytes of `path` in chunks, also written to `copy` if one is given.

  Raises:
    _Unreadable: reading or decompressing failed (an error writing `copy` is an OSError).
  """
  try:
    f = _OPENERS.get(path.suffix, open)(path, "rb")
  except _UNREADABLE as e:
    raise _Unreadable(path) from e
  with f:
    while True:
      try:
        chunk = f.read(_CHUNK)
      except _UNREADABLE as e:
        raise _Unreadable(path) from e
      if not chunk:
        return
      if copy is not None:
        copy.write(chunk)
      yield chunk


def _index_file(path: pathlib.Path, key: str, folder: pathlib.Path, split: str
                ) -> tuple[str, np.ndarray, list[int]]:
  """(the file to read, bounds of its documents, counts in `_COUNTS` order), cached in `folder`;
  `split` is the text field of a JSONL file, the document separator of a text file."""
  entry = folder / f"{key}.npz"
  target = folder / f"{key}.data" if path.suffix in _OPENERS else path
  if entry.exists() and target.exists():
    with np.load(entry) as cached:
      return str(target), cached["bounds"], cached["counts"].tolist()
  try:
    with atomic_file(target) if target != path else contextlib.nullcontext() as copy:
      if is_jsonl(path):
        bounds, counts = _scan_jsonl(_chunks(path, copy), split)
      else:
        bounds, counts = _scan_text(_chunks(path, copy), split.encode())
  except _Unreadable:
    bounds, counts = np.zeros((0, 2), np.int64), dict(unreadable=1)
  counts = [counts.get(name, 0) for name in _COUNTS]
  with atomic_file(entry) as f:
    np.savez(f, bounds=bounds, counts=np.array(counts, np.int64))
  return str(target), bounds, counts


def _combine(paths: list[pathlib.Path], keys: list[str], splits: list[str], folder: pathlib.Path,
             key: str, total: int) -> None:
  """Indexes every file (`total` bytes, several files at once) and writes their concatenated
  index under `key`."""
  begin = time.perf_counter()
  size = f"{total / 2**30:.1f} GiB" if total >= 2**30 else f"{total / 2**20:.1f} MiB"
  log_progress(f"data: indexing {len(paths):,} files ({size}) once; later runs reuse the index "
               f"in {folder}")
  with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
    files = list(pool.map(_index_file, paths, keys, [folder] * len(paths), splits))
  sizes = [len(bounds) for _, bounds, _ in files]
  log_progress(f"data: indexed {sum(sizes):,} documents in {time.perf_counter() - begin:.1f}s")
  with atomic_file(folder / f"{key}.npy") as f:
    np.lib.format.write_array_header_1_0(f, dict(descr="<i8", fortran_order=False,
                                                 shape=(sum(sizes), 2)))
    for _, bounds, _ in files:
      f.write(np.ascontiguousarray(bounds, "<i8"))
  meta = dict(files=[target for target, _, _ in files], jsonl=[is_jsonl(p) for p in paths],
              sizes=sizes, counts=[sum(column) for column in zip(*[c for _, _, c in files])],
              skipped=[(cause, str(p)) for p, (_, _, c) in zip(paths, files)
                       for cause in _WHOLE_FILE if c[_COUNTS.index(cause)]])
  with atomic_file(folder / f"{key}.json") as f:
    f.write(json.dumps(meta).encode())


def index_files(paths: list[pathlib.Path], cache_dir: str | os.PathLike[str], *,
                text_field: str = "text", separator: str = "") -> FileIndex:
  """The index of the documents of `paths` (in order), built once and cached in `cache_dir`:
  JSONL lines with a non-blank string `text_field`; text files whole, or split at `separator`.

  Raises:
    ConfigError: the cache folder cannot be written.
  """
  folder = pathlib.Path(cache_dir).expanduser()
  paths = [p.resolve() for p in paths]
  on_disk = [p.stat() for p in paths]
  splits = [text_field if is_jsonl(p) else separator for p in paths]
  keys = [_key(str(p), stat.st_size, stat.st_mtime_ns, split)
          for p, stat, split in zip(paths, on_disk, splits)]
  key = _key(keys)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / f"{key}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is None or not all(map(os.path.exists, meta["files"])):
      _combine(paths, keys, splits, folder, key, sum(stat.st_size for stat in on_disk))
      meta = json.loads(meta_path.read_text())
  except OSError as e:
    raise ConfigError(f"cannot write the data index cache {folder}: {e.strerror} (set "
                      "$BIRDIE_JAX_CACHE_DIR to a writable folder with room)") from None
  stats = SourceStats(documents=sum(meta["sizes"]), **dict(zip(_COUNTS, meta["counts"])),
                      skipped_files=tuple(map(tuple, meta["skipped"])))
  return FileIndex(str(folder / f"{key}.npy"), tuple(meta["files"]), tuple(meta["jsonl"]),
                   tuple(np.cumsum(meta["sizes"]).tolist()), stats)


def cut_document(index: FileIndex, pieces: int, cache_dir: str | os.PathLike[str]) -> FileIndex:
  """`index` (of one text document) with that document cut into about `pieces` pieces, each
  ending just after a newline where one is near (else at a character boundary); cached."""
  (start, end), = np.load(index.bounds_path).tolist()
  cuts = [start]
  with open(index.files[0], "rb") as f:
    for i in range(1, pieces):
      target = max(start + (end - start) * i // pieces, cuts[-1] + 1)
      f.seek(target)
      window = f.read(min(1 << 16, max(0, end - target)))
      newline = window.find(b"\n")
      cut = target + (newline + 1 if newline >= 0 else
                      next((j for j, b in enumerate(window) if b & 0xC0 != 0x80), len(window)))
      if cut < end and cut > cuts[-1]:
        cuts.append(cut)
  bounds = np.array(list(zip(cuts, cuts[1:] + [end])), np.int64)
  path = pathlib.Path(cache_dir).expanduser() / f"{_key(index.bounds_path, pieces)}.npy"
  with atomic_file(path) as f:
    np.save(f, bounds)
  stats = dataclasses.replace(index.stats, documents=len(bounds))
  return dataclasses.replace(index, bounds_path=str(path), file_ends=(len(bounds),), stats=stats)
