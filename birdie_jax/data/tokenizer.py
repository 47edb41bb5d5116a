"""Tokenizers: a locally trained (and cached) SentencePiece BPE model, or plain UTF-8 bytes.

Both reserve the special tokens of `special_tokens.ALL` at the same fixed ids (pad is 0). In the
SentencePiece model they are control symbols, so no text ever encodes to them. Nothing downloads.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
import hashlib
import io
import json
import math
import os
import re
from typing import Any

import numpy as np
import sentencepiece as spm

from birdie_jax.console import log_progress
from birdie_jax.data import special_tokens
from birdie_jax.data.documents import newline_chunks
from birdie_jax.errors import ConfigError
from birdie_jax.workdir import as_path, write_atomic

SAMPLE_CHARS = 3_000_000  # characters of training documents the BPE model is trained on
_MAX_DOC_CHARS = 100_000  # at most this much of one document goes into the sample
_MAX_SENTENCE_CHARS = 4_000  # the sample is fed as paragraphs cut to this length
_ENCODE_CHUNK_CHARS = 1 << 18  # longer texts are encoded in chunks cut at newlines, in threads
_THREADS = min(8, os.cpu_count() or 1)
_TRAINER_OPTIONS = dict(
    model_type="bpe",
    byte_fallback=True,
    character_coverage=0.9995,
    normalization_rule_name="identity",  # keep the text exactly (decode(encode(t)) == t)
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    hard_vocab_limit=False,  # a tiny sample may support fewer pieces than asked for
    max_sentence_length=4 * _MAX_SENTENCE_CHARS,
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    pad_piece=special_tokens.PAD, unk_piece=special_tokens.UNK,
    bos_piece=special_tokens.BOS, eos_piece=special_tokens.EOS,
    control_symbols=list(special_tokens.CONTROL),
)


class Tokenizer(abc.ABC):
  """Text <-> int32 ids, with the reserved special tokens of `special_tokens`."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (the model's embedding rows)."""

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """The int32 ids of `text` (never a special token)."""

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    """`encode` of every text."""
    return [self.encode(text) for text in texts]

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids`, skipping special tokens."""

  @abc.abstractmethod
  def special_id(self, name: str) -> int:
    """The id of a special token named as in `special_tokens` (e.g. '<begin>', '[COPY]')."""

  @property
  def pad_id(self) -> int:
    """Id of the padding token (0)."""
    return self.special_id(special_tokens.PAD)

  @property
  def sentinel_ids(self) -> np.ndarray:
    """The contiguous int32 ids of `<sentinel_0>` .. `<sentinel_99>`."""
    first = self.special_id(special_tokens.SENTINELS[0])
    return np.arange(first, first + special_tokens.NUM_SENTINELS, dtype=np.int32)


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes after the special tokens: id = len(special_tokens.ALL) + byte. No training."""

  _OFFSET = len(special_tokens.ALL)
  _IDS = {name: i for i, name in enumerate(special_tokens.ALL)}

  @property
  def vocab_size(self) -> int:
    """Specials plus 256 byte values."""
    return self._OFFSET + 256

  def encode(self, text: str) -> np.ndarray:
    """The UTF-8 bytes of `text`, shifted past the specials."""
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + self._OFFSET

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Bytes back to text (invalid UTF-8 becomes U+FFFD); specials are skipped."""
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= self._OFFSET) & (ids < self.vocab_size)] - self._OFFSET
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def special_id(self, name: str) -> int:
    """Position of `name` in `special_tokens.ALL`."""
    return self._IDS[name]


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model whose control symbols include all of `special_tokens.ALL`."""

  def __init__(self, model_proto: bytes, *, origin: str):
    self.model_proto = model_proto  # the .model file's bytes (what a run pins, see tokenizer_pin)
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except RuntimeError:
      raise ConfigError(f"tokenizer model {origin} is not a readable SentencePiece model") from None
    self._ids = {name: self._sp.piece_to_id(name) for name in special_tokens.ALL}
    missing = [name for name, i in self._ids.items()
               if self._sp.id_to_piece(i) != name
               or not (self._sp.is_control(i) or self._sp.is_unknown(i))]
    if missing:
      raise ConfigError(f"tokenizer model {origin} lacks the reserved control symbols "
                        f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    sentinels = [self._ids[name] for name in special_tokens.SENTINELS]
    if self.pad_id != 0 or sentinels != list(range(sentinels[0], sentinels[0] + len(sentinels))):
      raise ConfigError(f"tokenizer model {origin} needs pad id 0 and contiguous sentinel ids")
    self._is_special = np.zeros(self.vocab_size, bool)
    self._is_special[list(self._ids.values())] = True

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> SentencePieceTokenizer:
    """Loads a user-given `.model` file; ConfigError if unreadable or lacking the specials."""
    try:
      proto = as_path(path).read_bytes()
    except OSError as e:
      raise ConfigError(f"cannot read tokenizer model {path}: {e.strerror}") from None
    return cls(proto, origin=str(path))

  @property
  def vocab_size(self) -> int:
    """Number of pieces in the model."""
    return self._sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    """The ids of `text`; very long texts are encoded in newline-aligned chunks, in threads."""
    if len(text) <= _ENCODE_CHUNK_CHARS:
      return np.asarray(self._sp.encode(text), np.int32)
    pieces = self.encode_batch(newline_chunks(text, _ENCODE_CHUNK_CHARS))
    return np.concatenate(pieces)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    """SentencePiece's threaded batch encoding."""
    return [np.asarray(ids, np.int32)
            for ids in self._sp.encode(list(texts), num_threads=_THREADS)]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids`, skipping special tokens."""
    ids = np.asarray(ids, np.int64)
    return self._sp.decode(ids[~self._is_special[ids]].tolist())

  def special_id(self, name: str) -> int:
    """The id of a reserved special token."""
    return self._ids[name]


def training_sample(documents: Sequence[str], max_chars: int = SAMPLE_CHARS) -> list[str]:
  """A deterministic, corpus-spread sample of documents, as paragraphs, of about `max_chars`.

  Documents are visited in a fixed stride order (so a large corpus is sampled evenly without reading
  it all); each contributes at most `_MAX_DOC_CHARS`.
  """
  n = len(documents)
  stride = max(1, round(n * 0.6180339887))
  while math.gcd(stride, n) != 1:
    stride += 1
  sentences, total = [], 0
  for k in range(n):
    if total >= max_chars:
      break
    text = documents[(k * stride) % n][:_MAX_DOC_CHARS]
    total += len(text)
    for paragraph in re.split(r"(?<=\n\n)", text):
      sentences.extend(paragraph[i:i + _MAX_SENTENCE_CHARS]
                       for i in range(0, len(paragraph), _MAX_SENTENCE_CHARS))
  return [s for s in sentences if s.strip()]


def _cache_key(sample: Sequence[str], vocab_size: int) -> str:
  """Hash of everything the trained model depends on."""
  h = hashlib.sha256(json.dumps({"vocab_size": vocab_size, "options": _TRAINER_OPTIONS,
                                 "version": spm.__version__}, sort_keys=True).encode())
  for sentence in sample:
    h.update(sentence.encode("utf-8", errors="surrogatepass"))
    h.update(b"\0")
  return h.hexdigest()[:20]


def cache_path(sample: Sequence[str], vocab_size: int, cache_dir: str | os.PathLike[str]):
  """Where the model trained on `sample` is cached: `cache_dir/tokenizer/spm_<key>.model`."""
  return as_path(cache_dir) / "tokenizer" / f"spm_{_cache_key(sample, vocab_size)}.model"


def train_sentencepiece(documents: Sequence[str], *, vocab_size: int,
                        cache_dir: str | os.PathLike[str],
                        sample_chars: int = SAMPLE_CHARS) -> SentencePieceTokenizer:
  """A BPE model trained on a sample of `documents`, or the cached one of the same sample."""
  if vocab_size <= len(special_tokens.ALL) + 256:
    raise ConfigError(f"tokenizer vocab_size {vocab_size} is too small: it must exceed "
                      f"{len(special_tokens.ALL) + 256} (specials + 256 byte pieces)")
  sample = training_sample(documents, sample_chars)
  if not sample:
    raise ConfigError("cannot train the tokenizer: the training documents are empty")
  path = cache_path(sample, vocab_size, cache_dir)
  if path.exists():
    return SentencePieceTokenizer(path.read_bytes(), origin=str(path))
  log_progress(f"tokenizer: training a {vocab_size}-piece BPE model on "
               f"{sum(map(len, sample)):,} characters of the training documents once; later runs "
               f"reuse it from {path.parent}")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sample), model_writer=model,
                                   vocab_size=vocab_size, num_threads=_THREADS, minloglevel=2,
                                   input_sentence_size=0, **_TRAINER_OPTIONS)
  except RuntimeError as e:
    raise ConfigError(f"sentencepiece training failed (vocab_size {vocab_size}): {e}") from None
  try:
    write_atomic(path, model.getvalue())
  except OSError as e:
    raise ConfigError(f"cannot write the tokenizer cache {path}: {e.strerror}") from None
  return SentencePieceTokenizer(model.getvalue(), origin=str(path))


def build_tokenizer(data_config: Mapping[str, Any], train_documents: Sequence[str],
                    cache_dir: str | os.PathLike[str]) -> Tokenizer:
  """The tokenizer that `data_config.tokenizer` (kind, vocab_size, model_path) asks for."""
  config = data_config["tokenizer"]
  kind = config["kind"]
  if kind == "bytes":
    return ByteTokenizer()
  if kind != "sentencepiece":
    raise ConfigError(f"unknown tokenizer kind {kind!r}: use 'sentencepiece' or 'bytes'")
  if config.get("model_path"):
    return SentencePieceTokenizer.load(config["model_path"])
  return train_sentencepiece(train_documents, vocab_size=config["vocab_size"], cache_dir=cache_dir)
