"""One entry point for every text source: `load_documents(source, split, val_fraction=...)`.

Sources: 'embedded' (the Shakespeare passages shipped in the package), a path / directory / glob of
the user's text or JSONL files, or `tfds:<name>[/<config>][:<version>]`. Validation documents are
held out by a deterministic hash of the document index (`documents.split_indices`, memory-mapped
for large sources by `split_cache`), unless a TFDS dataset has its own 'validation' split. Files
and TFDS texts are read lazily, when indexed, and stay whole however long (the tokenizer encodes
long texts in chunks and the packer cuts them into pieces); a text that turns out empty reads as
'', which the packer skips.
"""
from __future__ import annotations

import os

from birdie_jax.data import embedded_corpus
from birdie_jax.data import file_source
from birdie_jax.data import tfds_source
from birdie_jax.data.documents import Documents
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.split_cache import split_index
from birdie_jax.errors import ConfigError

EMBEDDED = "embedded"
_PROBE = 1000  # documents of a split read, evenly spread, to find one with text


def _load_tfds(source: str, split: str, val_fraction: float, text_field: str,
               data_dir: str | None, cache_dir: str | os.PathLike[str]) -> Documents:
  """A TFDS split, read lazily; empty texts are left to the packer, which skips them."""
  builder = tfds_source.open_builder(source, data_dir)
  if "validation" in builder.info.splits:
    texts = tfds_source.split_texts(builder, split, text_field)
    indices = range(len(texts))
  else:
    texts = tfds_source.split_texts(builder, "train", text_field)
    indices = split_index(len(texts), split, val_fraction, cache_dir)
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


def _check_has_text(documents: Documents, source: str, split: str, text_field: str) -> None:
  """ConfigError unless one of up to `_PROBE` documents spread over `documents` has text."""
  probe = range(0, len(documents), max(1, len(documents) // _PROBE))[:_PROBE]
  if not any(documents[i] for i in probe):
    raise ConfigError(f"data source {source}: none of {len(probe)} {split} documents read has "
                      f"text (does data.text_field {text_field!r} name the field that holds it?)")


def load_documents(source: str, split: str, *, val_fraction: float, text_field: str = "text",
                   tfds_data_dir: str | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> Documents:
  """The documents of `split` ('train' or 'validation') of `source`, with `.stats` of skips.

  Args:
    source: 'embedded', a file / directory / glob of .txt or .jsonl(.gz) files, or 'tfds:<name>...'.
    split: 'train' or 'validation' (disjoint, deterministic).
    val_fraction: share of documents held out for validation.
    text_field: the JSONL key or TFDS feature holding the text.
    tfds_data_dir: where prepared TFDS datasets live (default `$TFDS_DATA_DIR`).
    cache_dir: where the index of a file source, decompressed copies of its compressed files and
      the split indices of large sources (`split_cache`) are cached (default
      `file_source.default_cache_dir()`: `$BIRDIE_JAX_CACHE_DIR/data_index`).

  Files that are empty, blank or not UTF-8 and JSONL lines that are not UTF-8 or not a JSON object
  are skipped and counted in `.stats` (of the whole source, the same for both splits;
  `skipped_note` words them), not logged here: the caller reports them once. JSONL lines without a
  non-empty string text field read as ''.

  Raises:
    ConfigError: the source does not exist, matches nothing, or the split has no document with
      text among those read to check.
  """
  if not source:
    raise ConfigError("data source is empty: use 'embedded', a path or glob, or tfds:<name>")
  cache_dir = cache_dir or file_source.default_cache_dir()
  if source.startswith("tfds:"):
    documents = _load_tfds(source, split, val_fraction, text_field, tfds_data_dir, cache_dir)
  else:
    if source == EMBEDDED:
      texts = embedded_corpus.passages()
      stats = SourceStats(documents=len(texts))
    else:
      texts, stats = file_source.open_files(source, text_field, cache_dir)
      if not texts:
        raise ConfigError(f"data source {source} has no non-empty UTF-8 document "
                          f"({skipped_note(stats) or 'no files read'})")
    documents = Documents(texts, split_index(len(texts), split, val_fraction, cache_dir), stats)
  _check_has_text(documents, source, split, text_field)
  return documents
