"""A split of a text source as an indexable sequence of documents, and the held-out rule."""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

from birdie_jax.errors import ConfigError

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class SourceStats:
  """What reading a source kept and skipped (skipped documents never reach training)."""

  documents: int = 0  # documents in the whole source (both splits), after skipping
  empty: int = 0  # empty or whitespace-only text files skipped
  undecodable: int = 0  # files or JSONL lines skipped because they are not UTF-8
  malformed: int = 0  # JSONL lines skipped because they are not a JSON object '{...}'
  unreadable: int = 0  # files skipped because they could not be read or decompressed
  no_text: int = 0  # JSONL lines skipped because their text field is missing or not a string
  binary: int = 0  # files skipped because they hold a NUL byte
  json_array: int = 0  # JSON files skipped because they are one array, not JSON lines
  # (cause, path) of each whole file skipped: 'format' (a directory's or glob's file with no
  # known text suffix), 'binary', 'json_array'
  skipped_files: tuple[tuple[str, str], ...] = ()


class Documents(Sequence[str]):
  """The documents `base[indices[i]]`, with the statistics of reading their source.

  `base` may be a list or a lazily read sequence (TFDS array_record, the user's indexed files), so
  the texts are only fetched when indexed, and may then be '' (the packer skips those); the object
  pickles into Grain worker processes. `indices` is an array, a range, or for large sources a
  `split_cache.MappedIndices`, which pickles as a path.
  """

  def __init__(self, base: Sequence[str], indices: Sequence[int], stats: SourceStats):
    self._base = base
    self._indices = indices
    self.stats = stats

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int | slice) -> str | Documents:
    """Document i, or the sub-sequence for a slice (e.g. one process's shard `docs[p::n]`)."""
    if isinstance(i, slice):
      return Documents(self._base, self._indices[i], self.stats)
    return self._base[int(self._indices[i])]


def newline_chunks(text: str, size: int) -> list[str]:
  """Cuts `text` into pieces of about `size` characters, just after a newline where there is one."""
  chunks, start = [], 0
  while start < len(text):
    end = min(start + size, len(text))
    if end < len(text):
      newline = text.rfind("\n", start + size // 2, end)
      end = newline + 1 if newline >= 0 else end
    chunks.append(text[start:end])
    start = end
  return chunks


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """A well-mixed 64-bit hash of each uint64 (SplitMix64's finaliser)."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


# Documents hashed at a time by `split_indices` (bounds its temporaries at large corpora).
SPLIT_CHUNK = 1 << 22


def split_indices(num_documents: int, split: str, val_fraction: float) -> np.ndarray:
  """Indices of `split`: document i is held out for validation iff hash(i) < val_fraction.

  Deterministic and stable, and the two splits are disjoint and cover every document. The
  indices are int32 below 2**31 documents (4 bytes a document instead of 8, in memory and in
  `split_cache`'s files) and computed `SPLIT_CHUNK` documents at a time.
  """
  if split not in SPLITS:
    raise ConfigError(f"unknown data split {split!r}: use 'train' or 'validation'")
  if not 0.0 <= val_fraction < 1.0:
    raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
  dtype = np.int32 if num_documents < 2**31 else np.int64
  parts = []
  for start in range(0, num_documents, SPLIT_CHUNK):
    ids = np.arange(start, min(start + SPLIT_CHUNK, num_documents), dtype=np.uint64)
    held_out = (_splitmix64(ids) >> np.uint64(11)) * 2.0**-53 < val_fraction
    keep = held_out if split == "validation" else ~held_out
    parts.append((np.flatnonzero(keep) + start).astype(dtype))
  indices = np.concatenate(parts) if parts else np.zeros(0, dtype)
  if not len(indices):
    raise ConfigError(f"the {split} split of {num_documents} documents is empty "
                      f"(val_fraction={val_fraction})")
  return indices
