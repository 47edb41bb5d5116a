"""A run's own tokenizer: pinned in its workdir at the first start, loaded (never trained) after.

The first start builds the tokenizer as `tokenizer.build_tokenizer` does (trained on a sample of the
training documents and cached under a key of that sample, or a given `model_path`) and
`pin_tokenizer` copies its model into `workdir/tokenizer/run.model`; the run's `run.json`
(`birdie_jax/train/identity.py`) records the file and its sha256. Every later start, `generate` and
`evaluate` read that file through `load_pinned`, whatever the data source holds now: appending a
file to a data directory, or changing data.val_fraction or data.text_field, changes the sample and
with it the cache key, and a new tokenizer of the same size would make every embedding row of the
checkpoint mean another piece.

Workdirs from before pinning (no run.json) go through `legacy_tokenizer`: the one cached model, or
the one of the current documents' sample key, with a warning; never a newly trained one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import hashlib
import os
from typing import Any

from birdie_jax.console import log_warning
from birdie_jax.data.tokenizer import (ByteTokenizer, SentencePieceTokenizer, Tokenizer,
                                       build_tokenizer, cache_path, training_sample)
from birdie_jax.errors import ConfigError
from birdie_jax.workdir import as_path, write_atomic

PINNED_FILE = "tokenizer/run.model"  # relative to the workdir


def sha256(data: bytes) -> str:
  """Hex sha256 of `data`."""
  return hashlib.sha256(data).hexdigest()


def pin_tokenizer(tokenizer: Tokenizer, workdir: str | os.PathLike[str]) -> dict[str, str]:
  """Writes a SentencePiece tokenizer's model into the workdir; the entry run.json records."""
  if isinstance(tokenizer, ByteTokenizer):
    return {"kind": "bytes"}
  write_atomic(as_path(workdir) / PINNED_FILE, tokenizer.model_proto)
  return {"kind": "sentencepiece", "file": PINNED_FILE, "sha256": sha256(tokenizer.model_proto)}


def load_pinned(entry: Mapping[str, str], workdir: str | os.PathLike[str]) -> Tokenizer:
  """The tokenizer run.json's `entry` names; ConfigError if its file is gone or was changed."""
  if entry["kind"] == "bytes":
    return ByteTokenizer()
  path = as_path(workdir) / entry["file"]
  try:
    proto = path.read_bytes()
  except OSError as e:
    raise ConfigError(f"cannot read the run's tokenizer {path} ({e.strerror}): restore it from a "
                      "copy of the workdir; the run never trains another") from None
  if sha256(proto) != entry["sha256"]:
    raise ConfigError(f"the run's tokenizer {path} changed since its first start (sha256 "
                      f"{entry['sha256'][:12]}... recorded, {sha256(proto)[:12]}... now): restore "
                      "the original file")
  return SentencePieceTokenizer(proto, origin=str(path))


def legacy_tokenizer(data_config: Mapping[str, Any], documents: Callable[[], Sequence[str]],
                     workdir: str | os.PathLike[str]) -> Tokenizer:
  """The tokenizer of a workdir from before pinning: a bytes or `model_path` tokenizer as
  configured, else the single cached `tokenizer/spm_*.model`, else the cached one of
  `documents()`' sample (read only when needed); ConfigError rather than training a new one."""
  config = data_config["tokenizer"]
  if config["kind"] != "sentencepiece" or config.get("model_path"):
    return build_tokenizer(data_config, [], cache_dir=workdir)
  cached = sorted(as_path(workdir).joinpath("tokenizer").glob("spm_*.model"))
  if len(cached) > 1:
    path = cache_path(training_sample(documents()), config["vocab_size"], workdir)
    cached = [path] if path.exists() else []
  if not cached:
    raise ConfigError(f"{workdir} has no tokenizer/{os.path.basename(PINNED_FILE)} and none of "
                      "its cached tokenizer/spm_*.model matches the data: set "
                      "data.tokenizer.model_path to the model the run was trained with")
  log_warning(f"{workdir} predates tokenizer pinning: using its cached {cached[0].name}")
  return SentencePieceTokenizer.load(cached[0])
