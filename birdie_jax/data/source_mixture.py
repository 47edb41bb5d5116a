"""Weighted mixtures of data sources: the `data.sources` syntax, and a split of every source.

    --config.data.sources='books=0.7:/data/books/*.jsonl.zst,wiki=0.3:tfds:wikipedia'
    --config.data.source_options='wiki.val_fraction=0.005,books.text_field=content'

`data.sources` is a comma-separated list of `name=weight:source` entries. A source is anything
`data.source` takes ('embedded', a file, directory or glob of .txt / .jsonl(.gz/.xz/.bz2/.zst)
files, `tfds:<name>[/<config>][:<version>]`); the source ends at the next `,name=`, so a path may
hold commas and colons. Names start with a letter and hold letters, digits, '_' and '-' (they name
the metrics). Weights are the share of packed rows drawn from each source: non-negative, summing
to 1 (within `TOLERANCE`). A weight of 0 trains on nothing from that source but still reports its
validation loss (an evaluation-only source). `data.source_options` sets a source's own
`val_fraction` or `text_field` (`name.option=value`, comma-separated); the others use the global
`data.val_fraction` and `data.text_field`. Each source has its own train / validation split,
drawn by the usual held-out rule (`documents.split_indices`) over its own documents.

Bad input gets one ConfigError line from `parse_sources` (config validation calls it before
anything is read): a malformed entry, a bad or duplicated name, a negative or non-numeric weight,
weights not summing to 1, an option naming a source that is not in `data.sources`.

`MixtureDocuments` holds one split of every source (`parts`, `weights`). The input pipeline
(`pipeline.make_train_dataset`) packs each part on its own and draws each row's source by weight
(`mix_dataset`); as a plain sequence of texts it is a weighted interleaving of the parts
(`_MixedTexts`), which is what the tokenizer's training sample and the objective controller's
validation sets read, so they see the mixture in its proportions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
import math
import re

import numpy as np

from birdie_jax.data.documents import Documents
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.documents import _splitmix64
from birdie_jax.errors import ConfigError

TOLERANCE = 1e-6  # how far the weights' sum may be from 1
OPTIONS = ("val_fraction", "text_field")  # what `data.source_options` may set per source
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_STARTS_ENTRY = re.compile(r"\s*[^=:,/\\]+=")  # 'name=' opens an entry; else a path's comma
_EXAMPLE = "e.g. books=0.7:/data/books/*.jsonl.zst,wiki=0.3:tfds:wikipedia"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One source of a mixture, as `data.sources` and `data.source_options` give it."""

  name: str
  weight: float
  source: str  # what `sources.load_documents` reads
  val_fraction: float
  text_field: str


def _entries(text: str, key: str) -> list[str]:
  """The comma-separated entries of `text`, a piece that does not open with 'name=' belonging to
  the entry before it (a comma inside a path)."""
  entries: list[str] = []
  for piece in text.split(","):
    if entries and piece.strip() and not _STARTS_ENTRY.match(piece):
      entries[-1] += "," + piece
    else:
      entries.append(piece)
  if any(not e.strip() for e in entries):
    raise ConfigError(f"{key} has an empty entry (a doubled or trailing comma?): {text!r}")
  return entries


def _weight(name: str, text: str) -> float:
  try:
    weight = float(text)
  except ValueError:
    raise ConfigError(f"data.sources: the weight of {name} must be a number, got {text!r} "
                      f"({_EXAMPLE})") from None
  if not math.isfinite(weight):
    raise ConfigError(f"data.sources: the weight of {name} must be finite, got {text!r}")
  if weight < 0:
    raise ConfigError(f"data.sources: the weight of {name} is negative ({text}); weights are "
                      "shares of the rows, >= 0 and summing to 1")
  return weight


def _parse_entry(entry: str) -> tuple[str, float, str]:
  """(name, weight, source) of 'name=weight:source'."""
  name, eq, rest = entry.partition("=")
  weight, colon, source = rest.partition(":")
  name, source = name.strip(), source.strip()
  if not eq or not colon:
    raise ConfigError(f"data.sources entry {entry.strip()!r} is not name=weight:source "
                      f"({_EXAMPLE})")
  if not _NAME.fullmatch(name):
    raise ConfigError(f"data.sources: source name {name!r} must start with a letter and hold "
                      "only letters, digits, '_' and '-'")
  weight_value = _weight(name, weight.strip())
  if not source:
    raise ConfigError(f"data.sources: source {name} names no data (name=weight:source, "
                      f"{_EXAMPLE})")
  return name, weight_value, source


def _options(text: str, names: Sequence[str]) -> dict[str, dict[str, str]]:
  """{name: {option: value}} of 'name.option=value,...'."""
  out: dict[str, dict[str, str]] = {}
  for entry in _entries(text, "data.source_options") if text.strip() else []:
    key, eq, value = entry.partition("=")
    name, dot, option = key.strip().partition(".")
    if not eq or not dot:
      raise ConfigError(f"data.source_options entry {entry.strip()!r} is not "
                        "name.option=value (e.g. wiki.val_fraction=0.005)")
    if name not in names:
      raise ConfigError(f"data.source_options names source {name!r}, which is not in "
                        f"data.sources ({', '.join(names) or 'empty'})")
    if option not in OPTIONS:
      raise ConfigError(f"data.source_options: unknown option {option!r} of {name} "
                        f"(one of {', '.join(OPTIONS)})")
    if option in out.setdefault(name, {}):
      raise ConfigError(f"data.source_options sets {name}.{option} twice")
    out[name][option] = value.strip()
  return out


def parse_sources(sources: str, options: str = "", *, val_fraction: float,
                  text_field: str) -> tuple[SourceSpec, ...]:
  """The sources of `data.sources` with their `data.source_options` (the others take the global
  `val_fraction` and `text_field`); () when `sources` is empty (one `data.source`).

  Raises:
    ConfigError: one line naming the first problem (see the module docstring).
  """
  if not sources.strip():
    if options.strip():
      raise ConfigError("data.source_options is set but data.sources is empty")
    return ()
  parsed = [_parse_entry(entry) for entry in _entries(sources, "data.sources")]
  names = [name for name, _, _ in parsed]
  for i, name in enumerate(names):
    if name in names[:i]:
      raise ConfigError(f"data.sources names {name} twice")
  total = math.fsum(weight for _, weight, _ in parsed)
  if abs(total - 1.0) > TOLERANCE:
    terms = " + ".join(f"{name} {weight:g}" for name, weight, _ in parsed)
    raise ConfigError(f"data.sources weights sum to {total:.9g}, not 1 ({terms})")
  chosen = _options(options, names)
  specs = []
  for name, weight, source in parsed:
    own = chosen.get(name, {})
    fraction = own.get("val_fraction", val_fraction)
    try:
      fraction = float(fraction)
    except ValueError:
      raise ConfigError(f"data.source_options: {name}.val_fraction must be a number, got "
                        f"{fraction!r}") from None
    if not 0.0 < fraction < 1.0:
      raise ConfigError(f"data.source_options: {name}.val_fraction must be in (0, 1), got "
                        f"{fraction}")
    field = own.get("text_field", text_field)
    if not field:
      raise ConfigError(f"data.source_options: {name}.text_field is empty")
    specs.append(SourceSpec(name, weight, source, fraction, field))
  return tuple(specs)


def config_sources(data_config) -> tuple[SourceSpec, ...]:
  """`parse_sources` of a config's `data` section (keys sources, source_options, val_fraction,
  text_field)."""
  return parse_sources(data_config.sources, data_config.source_options,
                       val_fraction=data_config.val_fraction, text_field=data_config.text_field)


def cumulative(weights: Sequence[float]) -> np.ndarray:
  """The normalised cumulative weights, last exactly 1: source k is drawn for u in
  [c[k-1], c[k]) (`pick`), so a zero weight is never drawn."""
  values = np.asarray(weights, np.float64)
  cum = np.cumsum(values / values.sum())
  cum[-1] = 1.0
  return cum


def pick(cum: np.ndarray, u: float) -> int:
  """The source drawn by a uniform `u` in [0, 1) under cumulative weights `cum`."""
  return int(np.searchsorted(cum, u, side="right"))


def derived_seed(seed: int, name: str) -> int:
  """A 32-bit seed for stream `name` (a source's shuffle and pieces, the row sampler): stable
  across processes and runs, independent of the other sources and of their order."""
  return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "little")


class _MixedTexts(Sequence[str]):
  """A weighted interleaving of `parts`: text i is a document of part k, k drawn by a hash of i
  against the weights, the document by another hash of i (with replacement). Pickles with the
  parts (lazy sequences pickle small)."""

  def __init__(self, parts: Sequence[Sequence[str]], weights: Sequence[float]):
    self._parts = list(parts)
    self._cum = cumulative(weights)
    self._length = sum(len(p) for p in self._parts)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int) -> str:
    if not -self._length <= i < self._length:
      raise IndexError(f"text {i} of {self._length}")
    ids = np.array([2 * (i % self._length), 2 * (i % self._length) + 1], np.uint64)
    first, second = (int(h) for h in _splitmix64(ids))
    part = self._parts[pick(self._cum, (first >> 11) * 2.0**-53)]
    return part[second % len(part)]


class MixtureDocuments(Documents):
  """One split of each source of a mixture: `parts` {name: Documents}, `weights` {name: weight},
  `specs`; as a sequence, the weighted interleaving `_MixedTexts` (a slice of it is a plain
  `Documents`). `stats.documents` counts every source's documents; each part has its own stats."""

  def __init__(self, parts: Mapping[str, Documents], specs: Sequence[SourceSpec]):
    self.parts = dict(parts)
    self.specs = tuple(specs)
    self.weights = {spec.name: spec.weight for spec in specs}
    texts = _MixedTexts([self.parts[s.name] for s in specs], [s.weight for s in specs])
    super().__init__(texts, range(len(texts)),
                     SourceStats(documents=sum(p.stats.documents for p in self.parts.values())))
