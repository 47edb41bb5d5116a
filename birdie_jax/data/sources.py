"""One entry point for every text source: `load_documents(source, split, val_fraction=...)`.

Sources: 'embedded' (the Shakespeare passages shipped in the package), a path / directory / glob of
the user's text or JSONL files, or `tfds:<name>[/<config>][:<version>]`. Validation documents are
held out by a deterministic hash of the document index (`documents.split_indices`, memory-mapped
for large sources by `split_cache`), unless a TFDS dataset has its own 'validation' split. Files
and TFDS texts are read lazily, when indexed, and stay whole however long (the tokenizer encodes
long texts in chunks and the packer cuts them into pieces); a text that turns out empty reads as
'', which the packer skips. A file source of one document (nanoGPT's input.txt) is cut into
pieces at line breaks, with a note, so that both splits have some; `document_separator` splits
text files at their real document boundaries instead.

A run reads its data through `run_documents(config.data, split)`: the documents of `data.source`,
or with `data.sources` (a weighted mixture, see `source_mixture`) a `MixtureDocuments` holding the
split of every source, each read by `load_documents` with its own val_fraction and text_field.
"""
from __future__ import annotations

import math
import os
import pathlib

from birdie_jax.console import log_progress
from birdie_jax.console import log_warning
from birdie_jax.data import embedded_corpus
from birdie_jax.data import file_source
from birdie_jax.data import tfds_source
from birdie_jax.data.documents import Documents
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.documents import split_indices
from birdie_jax.data.source_mixture import config_sources
from birdie_jax.data.source_mixture import MixtureDocuments
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
                 "no_text": "without a string text field", "unreadable": "unreadable"}
_FILE_CAUSES = {"format": "not a known text format", "binary": "binary (NUL bytes)",
                "json_array": "a JSON array, not JSON lines"}
_NAMED = 3  # file names listed per cause


def skipped_note(stats: SourceStats) -> str:
  """'3 documents skipped (2 empty, 1 not UTF-8); 2 files skipped (1 not a known text format:
  a.tar.gz; 1 binary (NUL bytes): b.txt)', or '' when reading skipped nothing."""
  counts = {reason: getattr(stats, field) for field, reason in _SKIP_REASONS.items()}
  total, notes = sum(counts.values()), []
  if total:
    parts = ", ".join(f"{n} {reason}" for reason, n in counts.items() if n)
    notes.append(f"{total} document{'s' if total > 1 else ''} skipped ({parts})")
  if stats.skipped_files:
    notes.append(_files_note(stats.skipped_files))
  return "; ".join(notes)


def _files_note(skipped: tuple[tuple[str, str], ...]) -> str:
  """'2 files skipped (1 binary (NUL bytes): b.txt; 1 ...)', a few names per cause."""
  names: dict[str, list[str]] = {cause: [] for cause in _FILE_CAUSES}
  for cause, path in skipped:
    names[cause].append(pathlib.Path(path).name)
  parts = "; ".join(
      f"{len(found)} {_FILE_CAUSES[cause]}: {', '.join(found[:_NAMED])}"
      + (f" and {len(found) - _NAMED} more" if len(found) > _NAMED else "")
      for cause, found in names.items() if found)
  return f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} skipped ({parts})"


def _cut_single(texts: file_source.FileTexts, source: str, split: str, val_fraction: float,
                cache_dir: str | os.PathLike[str]):
  """A source's only document cut into pieces, enough for a non-empty validation split (about 2
  pieces held out at first); says so once (for the train split)."""
  for pieces in (math.ceil(2 / val_fraction) * 2**k for k in range(4)):
    cut = texts.cut(pieces, cache_dir)
    held_out = _held_out(len(cut), val_fraction)
    if 0 < held_out < len(cut):
      break
  if split == "train":
    log_progress(f"data source {source}: its one document is cut at line breaks into {len(cut)} "
                 f"pieces, {held_out} of them held out for validation (data.document_separator "
                 "splits a file at its own document boundaries)")
  return cut


def _held_out(n: int, val_fraction: float) -> int:
  """How many of `n` documents `split_indices` holds out for validation."""
  try:
    return len(split_indices(n, "validation", val_fraction))
  except ConfigError:  # none
    return 0


def _check_has_text(documents: Documents, source: str, split: str, text_field: str) -> None:
  """ConfigError unless one of up to `_PROBE` documents spread over `documents` has text."""
  probe = range(0, len(documents), max(1, len(documents) // _PROBE))[:_PROBE]
  if not any(documents[i] for i in probe):
    raise ConfigError(f"data source {source}: none of {len(probe)} {split} documents read has "
                      f"text (does data.text_field {text_field!r} name the field that holds it?)")


def load_documents(source: str, split: str, *, val_fraction: float, text_field: str = "text",
                   document_separator: str = "", tfds_data_dir: str | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> Documents:
  """The documents of `split` ('train' or 'validation') of `source`, with `.stats` of skips.

  Args:
    source: 'embedded', a file / directory / glob of .txt or .jsonl(.gz) files, or 'tfds:<name>...'.
    split: 'train' or 'validation' (disjoint, deterministic).
    val_fraction: share of documents held out for validation.
    text_field: the JSONL key or TFDS feature holding the text.
    document_separator: splits the user's text files into documents ('' : a file is one).
    tfds_data_dir: where prepared TFDS datasets live (default `$TFDS_DATA_DIR`).
    cache_dir: where the index of a file source, decompressed copies of its compressed files and
      the split indices of large sources (`split_cache`) are cached (default
      `file_source.default_cache_dir()`: `$BIRDIE_JAX_CACHE_DIR/data_index`).

  Files of other formats, binary or JSON-array files, text files that are empty, blank or not
  UTF-8 and JSONL lines that are not UTF-8, not a JSON object or without a non-blank string text
  field are skipped and counted in `.stats` (of the whole source, the same for both splits;
  `skipped_note` words them), not logged here: the caller reports them once.

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
      texts, stats = file_source.open_files(source, text_field, cache_dir, document_separator)
      if not texts:
        hint = (f"; does data.text_field {text_field!r} name the field that holds the text?"
                if stats.no_text else "")
        raise ConfigError(f"data source {source} has no non-empty UTF-8 document "
                          f"({skipped_note(stats) or 'no files read'}{hint})")
      if len(texts) == 1 and val_fraction > 0:
        texts = _cut_single(texts, source, split, val_fraction, cache_dir)
    documents = Documents(texts, split_index(len(texts), split, val_fraction, cache_dir), stats)
  _check_has_text(documents, source, split, text_field)
  return documents


def run_documents(data_config, split: str, *, tfds_data_dir: str | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> Documents:
  """The documents of `split` of a run's data (its config's `data` section): `load_documents` of
  `data.source`, or for `data.sources` a `MixtureDocuments` of every source's split. A mixture's
  skipped documents are reported here, one warning line per source (for the train split only:
  both splits read the same files); a single source's are left to the caller, as before.

  Raises:
    ConfigError: as `load_documents`, naming the source of a mixture.
  """
  common = dict(document_separator=data_config.document_separator, tfds_data_dir=tfds_data_dir,
                cache_dir=cache_dir)
  specs = config_sources(data_config)
  if not specs:
    return load_documents(data_config.source, split, val_fraction=data_config.val_fraction,
                          text_field=data_config.text_field, **common)
  parts = {}
  for spec in specs:
    try:
      parts[spec.name] = load_documents(spec.source, split, val_fraction=spec.val_fraction,
                                        text_field=spec.text_field, **common)
    except ConfigError as e:
      raise ConfigError(f"data.sources {spec.name}: {e}") from None
    if split == "train" and skipped_note(parts[spec.name].stats):
      log_warning(f"data source {spec.name} ({spec.source}): "
                  f"{skipped_note(parts[spec.name].stats)}")
  if split == "train":
    log_progress("data.sources: " + ", ".join(
        f"{spec.name} {spec.weight:g} ({len(parts[spec.name]):,} training documents)"
        for spec in specs))
  return MixtureDocuments(parts, specs)
