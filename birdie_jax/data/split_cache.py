"""The indices of a large source's split, cached on disk and memory-mapped.

A `Documents` goes into every Grain worker by pickling, and again whenever the workers restart
(each change of the mixture weights). Its split indices would go with it: 4 bytes per document,
0.8 GB per worker at 200M documents. Above `MAPPED_FROM` documents, `split_index` writes them once
to a .npy file (atomically) and returns a `MappedIndices`, which pickles as the path and is
memory-mapped again where it is read: the workers share the pages instead of holding copies. The
file depends only on the document count, the split and `val_fraction` (the held-out rule hashes
document numbers), so sources of one size share it.
"""
from __future__ import annotations

from collections.abc import Sequence
import os
import pathlib

import numpy as np

from birdie_jax.console import log_warning
from birdie_jax.data.documents import split_indices
from birdie_jax.data.file_index import atomic_file

MAPPED_FROM = 1 << 20  # documents from which a split's indices are mapped rather than pickled
_FORMAT = 1  # bump when `documents.split_indices` changes


class MappedIndices(Sequence[int]):
  """Rows `rows` of a 1-D integer .npy file, memory-mapped where first read; pickles small."""

  def __init__(self, path: str, rows: range | None = None):
    self._path = path
    self._array: np.ndarray | None = None
    self._rows = range(len(self._mapped())) if rows is None else rows

  def _mapped(self) -> np.ndarray:
    if self._array is None:
      self._array = np.load(self._path, mmap_mode="r")
    return self._array

  def __getstate__(self) -> dict[str, object]:
    return {**self.__dict__, "_array": None}

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, i: int | slice) -> int | MappedIndices:
    """Index i, or the rows of a slice as another `MappedIndices` of the same file."""
    if isinstance(i, slice):
      return MappedIndices(self._path, self._rows[i])
    return int(self._mapped()[self._rows[i]])


def split_index(num_documents: int, split: str, val_fraction: float,
                cache_dir: str | os.PathLike[str]) -> Sequence[int]:
  """`documents.split_indices(...)`, as a `MappedIndices` of a file in `cache_dir` from
  `MAPPED_FROM` documents on (an array below, or when the folder cannot be written)."""
  if num_documents < MAPPED_FROM:
    return split_indices(num_documents, split, val_fraction)
  folder = pathlib.Path(cache_dir).expanduser()
  path = folder / f"split-v{_FORMAT}-{num_documents}-{split}-{val_fraction!r}.npy"
  if not path.exists():
    indices = split_indices(num_documents, split, val_fraction)
    try:
      folder.mkdir(parents=True, exist_ok=True)
      with atomic_file(path) as f:
        np.save(f, indices)
    except OSError as e:
      log_warning(f"keeping the {split} split's indices in memory (cannot write {path}: "
                  f"{e.strerror}); each Grain worker gets a copy")
      return indices
  return MappedIndices(str(path))
