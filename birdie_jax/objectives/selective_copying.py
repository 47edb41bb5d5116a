"""Selective copying (paper Fig. 2, A.5): copy the spans that the queries point to in the context.

The piece is the context. k non-overlapping regions `start delimiter + span + end delimiter` are
placed uniformly at random inside it (so every queried span is in the context; the public v2 code
truncated the context after choosing spans). Each query is `[START] start-delimiter [END]
end-delimiter`; the queries come in a random order, before the context (`query_first`) or after it:
    query_first:  [COPY] q_1 .. q_k [CONTEXT] context
    otherwise:    [CONTEXT] context [COPY] q_1 .. q_k
and the target is `span_1 [SEP] span_2 .. [SEP] span_k [DONE]` in query order. Span and delimiter
lengths are uniform in their ranges, shrunk where k regions would not fit a short context (each gets
at most `len(context) // k` tokens); a context shorter than k tokens gets fewer spans.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from birdie_jax.objectives.paradigm import attach_paradigm

MARKERS = ("[COPY]", "[START]", "[END]", "[CONTEXT]", "[SEP]", "[DONE]")


def _regions(n: int, k: int, span_range: tuple[int, int], delimiter_range: tuple[int, int],
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(region starts, start-delimiter, span and end-delimiter lengths) of k regions in n tokens."""
  low = np.array([delimiter_range[0], span_range[0], delimiter_range[0]])[:, None]
  width = np.array([delimiter_range[1], span_range[1], delimiter_range[1]])[:, None] + 1 - low
  before, span, after = low + (rng.random((3, k)) * width).astype(np.int64)
  slot = n // k
  span = np.minimum(span, max(1, slot - 2))
  before = np.minimum(before, (slot - span) // 2)
  after = np.minimum(after, slot - span - before)
  sizes = before + span + after
  cuts = np.sort(rng.integers(0, n - sizes.sum() + 1, k))  # free tokens before region i
  return cuts + np.cumsum(sizes) - sizes, before, span, after


def selective_copying(tokens: np.ndarray, rng: np.random.Generator, *, num_spans: int,
                      query_first: bool, span_range: tuple[int, int],
                      delimiter_range: tuple[int, int], marker_ids: Mapping[str, int],
                      paradigm_id: int | None = None,
                      append_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(X, Y) = (queries and context with markers, the queried spans separated by [SEP], [DONE])."""
  tokens = np.asarray(tokens, np.int32)
  n = len(tokens)
  if not n:
    return tokens[:0], tokens
  k = min(num_spans, n)
  starts, before, span, after = _regions(n, k, span_range, delimiter_range, rng)
  order = rng.permutation(k)
  ids = {name: np.array([marker_ids[name]], np.int32) for name in MARKERS}
  queries, targets = [ids["[COPY]"]], []
  for i in order.tolist():
    s = starts[i] + before[i]
    e = s + span[i]
    queries += [ids["[START]"], tokens[starts[i]:s], ids["[END]"], tokens[e:e + after[i]]]
    targets += [tokens[s:e], ids["[SEP]"]]
  targets[-1] = ids["[DONE]"]
  context = [ids["[CONTEXT]"], tokens]
  x = np.concatenate(queries + context if query_first else context + queries)
  return attach_paradigm(x, paradigm_id, append_prob, rng), np.concatenate(targets)


def example_lengths(n: np.ndarray, *, num_spans: int, span_range: tuple[int, int],
                    delimiter_range: tuple[int, int], paradigm: bool) -> np.ndarray:
  """At most n + 2 + 3k + min(n, k * (longest region)) + the paradigm token."""
  n = np.asarray(n, np.int64)
  k = np.minimum(num_spans, n)
  longest = span_range[1] + 2 * delimiter_range[1]
  copied = np.minimum(n, k * longest)
  return np.where(n > 0, n + 2 + 3 * k + copied + int(paradigm), 0)
