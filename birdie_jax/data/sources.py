"""One entry point for every text source: `load_documents(source, split, val_fraction=...)`.

Sources: 'embedded' (the Shakespeare passages shipped in the package), a path / directory / glob of
the user's text or JSONL files, or `tfds:<name>[/<config>][:<version>]`. Validation documents are
held out by a deterministic hash of the document index (`documents.split_indices`), unless a TFDS
dataset has its own 'validation' split. Documents of more than `MAX_DOCUMENT_CHARS` are cut at
newlines into parts after the split (TFDS texts are read lazily and stay whole; the tokenizer
encodes long texts in chunks and the packer cuts them into pieces either way).
"""
from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from birdie_jax.data import embedded_corpus
from birdie_jax.data import file_source
from birdie_jax.data import tfds_source
from birdie_jax.data.documents import cut_long_documents
from birdie_jax.data.documents import Documents
from birdie_jax.data.documents import MAX_DOCUMENT_CHARS
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.documents import split_indices
from birdie_jax.errors import ConfigError

EMBEDDED = "embedded"


def _load_tfds(source: str, split: str, val_fraction: float, text_field: str,
               data_dir: str | None) -> Documents:
  """A TFDS split, read lazily; empty texts are left to the packer, which skips them."""
  builder = tfds_source.open_builder(source, data_dir)
  if "validation" in builder.info.splits:
    texts = tfds_source.split_texts(builder, split, text_field)
    indices = np.arange(len(texts), dtype=np.int64)
  else:
    texts = tfds_source.split_texts(builder, "train", text_field)
    indices = split_indices(len(texts), split, val_fraction)
  if not len(indices):
    raise ConfigError(f"the {split} split of {source} is empty")
  return Documents(texts, indices, SourceStats(documents=len(texts)))


_SKIP_REASONS = {"empty": "empty", "undecodable": "not UTF-8", "malformed": "malformed JSONL",
                 "unreadable": "unreadable"}


def skipped_note(stats: SourceStats) -> str:
  """'3 documents skipped (2 empty, 1 not UTF-8)', or '' when reading skipped nothing."""
  counts = {reason: getattr(stats, field) for field, reason in _SKIP_REASONS.items()}
  total = sum(counts.values())
  if not total:
    return ""
  parts = ", ".join(f"{n} {reason}" for reason, n in counts.items() if n)
  return f"{total} document{'s' if total > 1 else ''} skipped ({parts})"


def load_documents(source: str, split: str, *, val_fraction: float, text_field: str = "text",
                   tfds_data_dir: str | None = None) -> Documents:
  """The documents of `split` ('train' or 'validation') of `source`, with `.stats` of skips.

  Args:
    source: 'embedded', a file / directory / glob of .txt or .jsonl(.gz) files, or 'tfds:<name>...'.
    split: 'train' or 'validation' (disjoint, deterministic).
    val_fraction: share of documents held out for validation.
    text_field: the JSONL key or TFDS feature holding the text.
    tfds_data_dir: where prepared TFDS datasets live (default `$TFDS_DATA_DIR`).

  Empty, non-UTF-8 or malformed documents are skipped and counted in `.stats` (of the whole
  source, the same for both splits; `skipped_note` words them), not logged here: the caller
  reports them once.

  Raises:
    ConfigError: the source does not exist, matches nothing, or has no non-empty document.
  """
  if not source:
    raise ConfigError("data source is empty: use 'embedded', a path or glob, or tfds:<name>")
  if source.startswith("tfds:"):
    return _load_tfds(source, split, val_fraction, text_field, tfds_data_dir)
  if source == EMBEDDED:
    texts = list(embedded_corpus.passages())
    stats = SourceStats(documents=len(texts))
  else:
    texts, stats = file_source.read_files(source, text_field)
    if not texts:
      raise ConfigError(f"data source {source} has no non-empty UTF-8 document "
                        f"({skipped_note(stats) or 'no files read'})")
  kept = [texts[i] for i in split_indices(len(texts), split, val_fraction)]
  parts, cut = cut_long_documents(kept, MAX_DOCUMENT_CHARS)
  if cut:
    logging.warning("Data source %s: cut %d documents of over %d characters into parts", source,
                    cut, MAX_DOCUMENT_CHARS)
  return Documents(parts, np.arange(len(parts)), dataclasses.replace(stats, cut=cut))
