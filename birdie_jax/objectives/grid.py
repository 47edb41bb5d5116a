"""The configuration grid (paper A.2) and the curricula that weight it.

Each objective class expands into named configurations, e.g. `infilling/span8_rate15_len512-1024`;
together they are the controller's action space. Lengths in names:
  len<lo>-<hi>  infilling, copying, deshuffling, autoencoding: the example's packed positions
                len(X) + len(Y), drawn uniformly per example; the document piece is as long as fits.
                Read this way every range of the paper fits its 2048-token rows (a copy of n tokens
                costs 2n positions; the paper's copying range "256-2014" is read as 256-2048).
  ctx<lo>-<hi>  selective copying: the context's token count.
  fill          next-token prediction, prefix LM and UL2's denoisers: the room left in the row.
The ranges are the paper's for 2048-token rows. For other rows, every length (selective copying's
span and delimiter lengths too) is multiplied by `length_scale` (default `min(1, seq_len / 2048)`)
and rounded, then clipped to the smallest example an objective can make and to the row; names show
the lengths in use. A configuration whose smallest example cannot fit the row is a ConfigError.

Curricula:
  ntp           next-token prediction alone, without paradigm tokens (the baseline).
  ul2           UL2's seven denoisers (paper A.6): infilling R (span 3 / 15%, 8 / 15%),
                X (3 / 50%, 8 / 50%, 64 / 15%, 64 / 50%) and S (prefix LM), weighted
                0.2, 0.2, 0.1 x 4, 0.2 as in the paper-era config; each fills its row; mode tokens
                are always prepended, as in UL2.
  fixed_ratio   Birdie's configurations with the hand-set class ratios `FIXED_RATIO` (the paper's
                hand-tuned ratios are unpublished), uniform within a class.
  uniform       Birdie's configurations at `birdie`'s starting weights (1/7 per class, uniform
                within a class), kept fixed: no controller runs (`train.mixture_control`), so it
                is the controller's baseline (train it on the model `birdie` uses to compare them).
  birdie, birdie_causal
                All of Birdie's configurations, 1/7 per class and uniform within a class (the
                paper-era starting mixture) until the controller sets the weights; the two differ
                only in the model (bidirectional prefix or causal).
Examples carry their class's paradigm token (ntp: none), appended half of the time (A.7; ul2 never).
`class_weights` ('infilling=0.5,copying=0.5') replaces a curriculum's class weights; classes left
out get none, and within a class the curriculum's proportions are kept.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from birdie_jax.errors import ConfigError
from birdie_jax.objectives import registry

FILL, POSITIONS, TOKENS = "fill", "positions", "tokens"  # what a configuration's range counts
PAPER_SEQ_LEN = 2048  # the row length the paper's ranges are for
CURRICULA = ("ntp", "ul2", "fixed_ratio", "uniform", "birdie_causal", "birdie")
BIRDIE_APPEND_PROB = 0.5  # paradigm token appended (else prepended) half of the time

# Paper A.2 (lengths for 2048-token rows).
INFILLING_LENGTHS = ((128, 256), (256, 512), (512, 1024), (1024, 2048))
INFILLING_RATES = (0.05, 0.15, 0.5)
MEAN_SPANS = (3, 8, 32)
SELECTIVE_SPANS = (1, 2, 3, 4)
SELECTIVE_CONTEXTS = ((384, 768), (768, 1536))
SELECTIVE_SPAN_RANGE = (4, 32)  # tokens per copied span (paper A.5)
SELECTIVE_DELIMITER_RANGE = (1, 8)  # tokens per start / end delimiter (paper A.5)
COPYING_LENGTHS = ((64, 256), (256, 2048))
DESHUFFLING_LENGTHS = ((128, 256), (512, 1024))
DESHUFFLING_PCTS = (0.5, 1.0)
AUTOENCODING_LENGTHS = ((192, 384), (384, 768), (768, 1536))
AUTOENCODING_RATES = (0.15, 0.85)
# UL2 (paper A.6): (mean span, rate, weight) of its infilling denoisers; the S-denoiser's weight.
UL2_DENOISERS = ((3, 0.15, 0.2), (8, 0.15, 0.2), (3, 0.5, 0.1), (8, 0.5, 0.1), (64, 0.15, 0.1),
                 (64, 0.5, 0.1))
UL2_PREFIX_WEIGHT = 0.2
# The fixed-ratio baseline's hand-set class weights: causal LM stays the largest share (the
# downstream tasks are generative), the denoisers about a third, retrieval-style tasks the rest.
FIXED_RATIO = {"next_token_prediction": 0.3, "prefix_lm": 0.15, "selective_copying": 0.1,
               "copying": 0.075, "deshuffling": 0.075, "infilling": 0.2, "autoencoding": 0.1}


@dataclasses.dataclass(frozen=True)
class Configuration:
  """One arm of the action space: an objective class, its parameters and its length range."""

  name: str  # e.g. 'infilling/span8_rate15_len64-128'
  objective: str  # the class, a key of `registry.OBJECTIVES`
  unit: str  # FILL, POSITIONS or TOKENS: what `lengths` counts
  lengths: tuple[int, int]  # inclusive range (for FILL: smallest example, seq_len)
  params: Mapping[str, Any]  # the objective's keyword parameters (ids are bound later)


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """The configurations of a curriculum for one row length, with their starting weights."""

  name: str
  configurations: tuple[Configuration, ...]
  weights: np.ndarray  # starting mixture over `configurations` (sums to 1)
  append_prob: float | None  # paradigm token appended with this probability; None: no token
  seq_len: int
  num_sentinels: int

  @property
  def names(self) -> tuple[str, ...]:
    """Configuration names, in action-space order."""
    return tuple(c.name for c in self.configurations)

  @property
  def classes(self) -> tuple[str, ...]:
    """The objective classes present, in `registry.CLASSES` order."""
    present = {c.objective for c in self.configurations}
    return tuple(name for name in registry.CLASSES if name in present)

  @property
  def class_index(self) -> np.ndarray:
    """For each configuration, the index of its class in `classes`."""
    return np.array([self.classes.index(c.objective) for c in self.configurations], np.int64)


@dataclasses.dataclass(frozen=True)
class _Spec:
  """A configuration before scaling: lengths for 2048-token rows."""

  objective: str
  unit: str
  lengths: tuple[int, int]
  params: Mapping[str, Any]
  weight: float = 1.0  # relative weight within its class


def _percent(rate: float) -> int:
  return int(round(rate * 100))


def _label(spec: _Spec, lengths: tuple[int, int]) -> str:
  """'<class>/<parameters>_<lengths>', e.g. 'infilling/span8_rate15_len512-1024'."""
  p, parts = spec.params, []
  if spec.objective in ("infilling", "autoencoding"):
    parts += [f"span{p['mean_span']}", f"rate{_percent(p['rate'])}"]
    parts += ["shuffle"] if p.get("shuffle") else []
  elif spec.objective == "deshuffling":
    parts.append(f"pct{_percent(p['pct'])}")
  elif spec.objective == "selective_copying":
    parts += [f"spans{p['num_spans']}", "query_before" if p["query_first"] else "query_after"]
  if spec.unit == FILL:
    parts.append("fill")
  else:
    parts.append(f"{'ctx' if spec.unit == TOKENS else 'len'}{lengths[0]}-{lengths[1]}")
  return f"{spec.objective}/{'_'.join(parts)}"


def _birdie_specs(scale: float) -> list[_Spec]:
  """Paper A.2's grid: 96 configurations in 7 classes."""
  span_range = tuple(_scaled(v, scale) for v in SELECTIVE_SPAN_RANGE)
  delimiter_range = tuple(_scaled(v, scale) for v in SELECTIVE_DELIMITER_RANGE)
  specs = [_Spec("next_token_prediction", FILL, (0, 0), {}), _Spec("prefix_lm", FILL, (0, 0), {})]
  specs += [_Spec("selective_copying", TOKENS, ctx,
                  dict(num_spans=k, query_first=first, span_range=span_range,
                       delimiter_range=delimiter_range))
            for k, first, ctx in itertools.product(SELECTIVE_SPANS, (True, False),
                                                   SELECTIVE_CONTEXTS)]
  specs += [_Spec("copying", POSITIONS, lengths, {}) for lengths in COPYING_LENGTHS]
  specs += [_Spec("deshuffling", POSITIONS, lengths, dict(pct=pct))
            for pct, lengths in itertools.product(DESHUFFLING_PCTS, DESHUFFLING_LENGTHS)]
  specs += [_Spec("infilling", POSITIONS, lengths, dict(rate=rate, mean_span=span))
            for span, rate, lengths in itertools.product(MEAN_SPANS, INFILLING_RATES,
                                                         INFILLING_LENGTHS)]
  specs += [_Spec("autoencoding", POSITIONS, lengths, dict(rate=rate, mean_span=span,
                                                           shuffle=shuffle))
            for span, rate, shuffle, lengths in itertools.product(
                MEAN_SPANS, AUTOENCODING_RATES, (False, True), AUTOENCODING_LENGTHS)]
  return specs


def _ul2_specs() -> list[_Spec]:
  specs = [_Spec("infilling", FILL, (0, 0), dict(rate=rate, mean_span=span), weight)
           for span, rate, weight in UL2_DENOISERS]
  return specs + [_Spec("prefix_lm", FILL, (0, 0), {}, UL2_PREFIX_WEIGHT)]


def _scaled(value: int, scale: float) -> int:
  return max(1, int(value * scale + 0.5))


def _fit(spec: _Spec, scale: float, *, curriculum: str, seq_len: int, paradigm: bool,
         num_sentinels: int) -> Configuration:
  """The configuration, its range scaled and clipped to what fits; ConfigError if nothing fits."""
  def lengths(n: np.ndarray) -> np.ndarray:
    return registry.example_lengths(spec.objective, spec.params, n, paradigm=paradigm,
                                    max_spans=num_sentinels)

  row = lengths(np.arange(seq_len + 1))
  smallest = int(row[1])
  if spec.unit == FILL:
    low, high = smallest, seq_len
  elif spec.unit == POSITIONS:
    low = max(_scaled(spec.lengths[0], scale), smallest)
    high = min(_scaled(spec.lengths[1], scale), seq_len)
  else:
    low = _scaled(spec.lengths[0], scale)
    high = min(_scaled(spec.lengths[1], scale), int(np.searchsorted(row, seq_len, "right")) - 1)
  if low > high:
    need = int(lengths(np.array([low]))[0]) if spec.unit == TOKENS else low
    raise ConfigError(
        f"train.seq_len {seq_len} is too small for curriculum {curriculum}: "
        f"{_label(spec, (low, low))} needs examples of at least {need} positions "
        f"(lengths scaled by {scale:g}; see data.length_scale)")
  return Configuration(_label(spec, (low, high)), spec.objective, spec.unit, (low, high),
                       dict(spec.params))


def parse_class_weights(text: str, classes: Sequence[str]) -> dict[str, float]:
  """'name=weight,...' -> {name: weight}; ConfigError unless known names, weights summing to 1."""
  weights = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    name, _, value = item.partition("=")
    name = name.strip()
    if name not in classes:
      raise ConfigError(f"data.class_weights names {name!r}, not a class of this curriculum "
                        f"({', '.join(classes)})")
    try:
      weights[name] = float(value)
    except ValueError:
      raise ConfigError(f"data.class_weights: {item!r} is not name=number") from None
    if not math.isfinite(weights[name]) or weights[name] < 0:
      raise ConfigError(f"data.class_weights: weight of {name} must be >= 0, got {value}")
  total = sum(weights.values())
  if abs(total - 1.0) > 1e-3:
    raise ConfigError(f"data.class_weights must sum to 1, got {total:g} ({text!r})")
  return {name: w / total for name, w in weights.items()}


def _weights(specs: Sequence[_Spec], class_weights: Mapping[str, float]) -> np.ndarray:
  """Each class's weight shared among its configurations in proportion to their spec weights."""
  totals = {c: sum(s.weight for s in specs if s.objective == c) for c in class_weights}
  return np.array([class_weights.get(s.objective, 0.0) * s.weight / totals.get(s.objective, 1.0)
                   for s in specs])


def build_curriculum(name: str, *, seq_len: int, num_sentinels: int, length_scale: float = 0.0,
                     class_weights: str = "") -> Curriculum:
  """The configurations and starting weights of curriculum `name` for rows of `seq_len` tokens.

  Args:
    name: one of `CURRICULA`.
    seq_len: tokens per packed row.
    num_sentinels: reserved sentinel ids (at most one span per sentinel).
    length_scale: factor on the paper's 2048-row lengths; 0 picks min(1, seq_len / 2048).
    class_weights: optional 'class=weight,...' replacing the curriculum's class weights.

  Raises:
    ConfigError: unknown curriculum, bad weights, or a configuration that cannot fit the row.
  """
  if name not in CURRICULA:
    raise ConfigError(f"curriculum must be one of {CURRICULA}, got {name!r}")
  if seq_len < 1:
    raise ConfigError(f"train.seq_len must be positive, got {seq_len}")
  if length_scale < 0 or not math.isfinite(length_scale):
    raise ConfigError(f"data.length_scale must be >= 0, got {length_scale}")
  scale = length_scale or min(1.0, seq_len / PAPER_SEQ_LEN)
  append_prob = {"ntp": None, "ul2": 0.0}.get(name, BIRDIE_APPEND_PROB)
  if name == "ntp":
    specs = [_Spec("next_token_prediction", FILL, (0, 0), {})]
  elif name == "ul2":
    specs = _ul2_specs()
  else:
    specs = _birdie_specs(scale)
  classes = tuple(c for c in registry.CLASSES if any(s.objective == c for s in specs))
  if class_weights:
    by_class = parse_class_weights(class_weights, classes)
  elif name == "fixed_ratio":
    by_class = FIXED_RATIO
  elif name == "ul2":
    by_class = {c: sum(s.weight for s in specs if s.objective == c) for c in classes}
  else:
    by_class = {c: 1.0 / len(classes) for c in classes}
  configurations = tuple(_fit(s, scale, curriculum=name, seq_len=seq_len,
                              paradigm=append_prob is not None, num_sentinels=num_sentinels)
                         for s in specs)
  weights = _weights(specs, by_class)
  return Curriculum(name, configurations, weights / weights.sum(), append_prob, seq_len,
                    num_sentinels)
