"""Each objective on random documents of every length 0..several rows: shapes, ids, semantics."""
from collections import Counter

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from birdie_jax.objectives import autoencoding
from birdie_jax.objectives import copying
from birdie_jax.objectives import deshuffling
from birdie_jax.objectives import infilling
from birdie_jax.objectives import next_token
from birdie_jax.objectives import prefix_lm
from birdie_jax.objectives import registry
from birdie_jax.objectives import selective_copying
from birdie_jax.objectives import spans

LOW, HIGH = 1000, 1040  # document ids (few values, so shuffles and delimiters repeat tokens)
PARADIGM = 7
SENTINELS = np.arange(20, 276, dtype=np.int32)
MARKERS = dict(zip(selective_copying.MARKERS, range(300, 306)))
MAX_LEN = 4 * 64 + 1  # several rows of a 64-token test row
EXAMPLES = settings(max_examples=150, deadline=None)


@st.composite
def documents(draw, max_len=MAX_LEN):
  """(int32 tokens of any length 0..max_len, seed)."""
  n = draw(st.integers(0, max_len))
  seed = draw(st.integers(0, 2**32 - 1))
  return np.random.default_rng(seed).integers(LOW, HIGH, n).astype(np.int32), seed


def body(x):
  """X without its paradigm token, which must be first or last (exactly once)."""
  assert np.count_nonzero(x == PARADIGM) == 1 and PARADIGM in (x[0], x[-1])
  return x[1:] if x[0] == PARADIGM else x[:-1]


def check_common(objective, tokens, seed, allowed, params):
  """Runs `objective`; checks dtype, shape, ids, length bound and determinism; returns (X, Y)."""
  x, y = objective(tokens, np.random.default_rng(seed), paradigm_id=PARADIGM, **params)
  again = objective(tokens, np.random.default_rng(seed), paradigm_id=PARADIGM, **params)
  assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
  for a in (x, y):
    assert a.dtype == np.int32 and a.ndim == 1
    doc_ids = (a >= LOW) & (a < HIGH)
    assert np.all(doc_ids | np.isin(a, allowed))
  if not len(tokens):
    assert not len(x) and not len(y)
    return None
  assert len(y) >= 1
  name = objective.__name__
  bound = registry.example_lengths(name, params, np.array([len(tokens)]), paradigm=True,
                                   max_spans=len(SENTINELS))[0]
  assert len(x) + len(y) <= bound
  return x, y


def varies_with_seed(objective, tokens, params):
  outputs = {tuple(np.concatenate(objective(tokens, np.random.default_rng(s), paradigm_id=PARADIGM,
                                            **params)).tolist()) for s in range(6)}
  return len(outputs) > 1


@EXAMPLES
@given(documents())
def test_next_token_prediction(doc):
  tokens, seed = doc
  out = check_common(next_token.next_token_prediction, tokens, seed, [PARADIGM], {})
  if out:
    assert out[0].tolist() == [PARADIGM] and np.array_equal(out[1], tokens)  # never copying


@EXAMPLES
@given(documents())
def test_prefix_lm(doc):
  tokens, seed = doc
  out = check_common(prefix_lm.prefix_lm, tokens, seed, [PARADIGM], {})
  if out:
    prefix = body(out[0])
    assert np.array_equal(np.concatenate([prefix, out[1]]), tokens)
    low, high = prefix_lm.split_bounds(len(tokens))
    assert low <= len(prefix) <= high
    if len(tokens) >= 8:
      assert len(prefix) >= 4 and len(out[1]) >= 4 and len(prefix) >= len(tokens) // 2


@EXAMPLES
@given(documents())
def test_copying(doc):
  tokens, seed = doc
  out = check_common(copying.copying, tokens, seed, [PARADIGM], {})
  if out:
    assert np.array_equal(body(out[0]), tokens) and np.array_equal(out[1], tokens)


@EXAMPLES
@given(documents(), st.sampled_from([0.5, 1.0]))
def test_deshuffling(doc, pct):
  tokens, seed = doc
  out = check_common(deshuffling.deshuffling, tokens, seed, [PARADIGM], dict(pct=pct))
  if out:
    shuffled = body(out[0])
    assert np.array_equal(out[1], tokens)
    assert np.array_equal(np.sort(shuffled), np.sort(tokens))  # the same multiset
    assert np.count_nonzero(shuffled != tokens) <= int(pct * len(tokens) + 0.5)


def test_deshuffling_applies_the_fraction():
  tokens = np.arange(LOW, LOW + 1000, dtype=np.int32)  # distinct, so moved tokens are visible
  rng = np.random.default_rng(0)
  half = deshuffling.deshuffling(tokens, rng, pct=0.5)[0]
  full = deshuffling.deshuffling(tokens, rng, pct=1.0)[0]
  assert 450 <= np.count_nonzero(half != tokens) <= 500
  assert np.count_nonzero(full != tokens) >= 990


def fill_sentinels(x, y):
  """Puts each target span back in place of its sentinel."""
  is_sentinel = np.isin(y, SENTINELS)
  ends = np.flatnonzero(is_sentinel)
  pieces = dict(zip(y[ends].tolist(), np.split(y, ends + 1)[:-1]))
  out = []
  for token in x.tolist():
    out.extend(pieces[token][:-1].tolist() if token in pieces else [token])
  return np.array(out, np.int32)


@EXAMPLES
@given(documents(), st.sampled_from([0.05, 0.15, 0.5]), st.sampled_from([3, 8, 32]))
def test_infilling(doc, rate, mean_span):
  tokens, seed = doc
  params = dict(rate=rate, mean_span=mean_span, sentinel_ids=SENTINELS)
  out = check_common(infilling.infilling, tokens, seed, [PARADIGM, *SENTINELS], params)
  if out:
    x, y = body(out[0]), out[1]
    used = x[np.isin(x, SENTINELS)]
    assert np.array_equal(used, SENTINELS[:len(used)])  # unique, in order
    assert np.array_equal(y[np.isin(y, SENTINELS)], used)  # each span ends with its sentinel
    assert np.array_equal(fill_sentinels(x, y), tokens)
    m, k = spans.span_counts(len(tokens), rate, mean_span, len(SENTINELS))
    assert len(y) == m + k and len(used) == k  # the rate is really applied
    assert len(out[0]) + len(y) == len(tokens) + 2 * k + 1


@EXAMPLES
@given(documents(), st.sampled_from([0.15, 0.85]), st.sampled_from([3, 8, 32]))
def test_autoencoding(doc, rate, mean_span):
  tokens, seed = doc
  kept = []
  for shuffle in (False, True):
    params = dict(rate=rate, mean_span=mean_span, shuffle=shuffle, sentinel_ids=SENTINELS)
    out = check_common(autoencoding.autoencoding, tokens, seed, [PARADIGM, *SENTINELS], params)
    if not out:
      return
    x, y = body(out[0]), out[1]
    assert np.array_equal(y, tokens)
    kept.append(Counter(x.tolist()))
    m, k = spans.span_counts(len(tokens), rate, mean_span, len(SENTINELS))
    text = x[~np.isin(x, SENTINELS)]
    assert k - 1 <= len(tokens) - m - len(text) <= k  # one dropped token after each span
    assert not Counter(text.tolist()) - Counter(tokens.tolist())
    if not shuffle:  # kept text in document order
      assert is_subsequence(text, tokens)
  assert kept[0] == kept[1]  # shuffling loses no token (same seed, same masking)


def is_subsequence(small, big):
  it = iter(big.tolist())
  return all(token in it for token in small.tolist())


def test_autoencoding_shuffle_moves_pieces():
  tokens = np.arange(LOW, LOW + 600, dtype=np.int32)
  rng = np.random.default_rng(3)
  x, _ = autoencoding.autoencoding(tokens, rng, rate=0.15, mean_span=8, shuffle=True,
                                   sentinel_ids=SENTINELS)
  text = x[~np.isin(x, SENTINELS)]
  assert np.any(np.diff(text) < 0)  # pieces out of order
  assert len(text) == len(set(text.tolist()))


def parse_selective(x):
  """(context, [(start delimiter, end delimiter)] in query order, query_first)."""
  copy, context_marker = MARKERS["[COPY]"], MARKERS["[CONTEXT]"]
  c, q = int(np.flatnonzero(x == context_marker)[0]), int(np.flatnonzero(x == copy)[0])
  query_first = q < c
  context = x[c + 1:] if query_first else x[c + 1:q]
  queries = x[q + 1:c] if query_first else x[q + 1:]
  starts = np.flatnonzero(queries == MARKERS["[START]"])
  pairs = []
  for block in np.split(queries, starts[1:]):
    end = int(np.flatnonzero(block == MARKERS["[END]"])[0])
    pairs.append((block[1:end], block[end + 1:]))
  return context, pairs, query_first


def occurs(needle, haystack):
  if not len(needle):
    return True
  windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
  return bool(np.any(np.all(windows == needle, axis=1)))


@EXAMPLES
@given(documents(), st.integers(1, 4), st.booleans(),
       st.sampled_from([((4, 32), (1, 8)), ((1, 4), (1, 1))]))
def test_selective_copying(doc, num_spans, query_first, ranges):
  tokens, seed = doc
  params = dict(num_spans=num_spans, query_first=query_first, span_range=ranges[0],
                delimiter_range=ranges[1], marker_ids=MARKERS)
  out = check_common(selective_copying.selective_copying, tokens, seed,
                     [PARADIGM, *MARKERS.values()], params)
  if not out:
    return
  context, queries, first = parse_selective(body(out[0]))
  assert np.array_equal(context, tokens) and first == query_first
  y = out[1]
  assert y[-1] == MARKERS["[DONE]"] and np.count_nonzero(y == MARKERS["[DONE]"]) == 1
  targets = np.split(y[:-1], np.flatnonzero(y[:-1] == MARKERS["[SEP]"]))
  targets = [t[1:] if i else t for i, t in enumerate(targets)]
  assert len(targets) == len(queries) == min(num_spans, len(tokens))
  for (before, after), span in zip(queries, targets):
    assert 1 <= len(span) <= ranges[0][1] and len(before) <= ranges[1][1]
    assert occurs(np.concatenate([before, span, after]), context)  # queried span in the context


def test_selective_copying_paper_example():
  """Fig. 2: context ABCDEF, span DE, delimiters BC and F."""
  tokens = np.arange(LOW, LOW + 6, dtype=np.int32)  # A..F
  for seed in range(200):
    x, y = selective_copying.selective_copying(
        tokens, np.random.default_rng(seed), num_spans=1, query_first=False, span_range=(2, 2),
        delimiter_range=(1, 2), marker_ids=MARKERS)
    if y[:-1].tolist() == [LOW + 3, LOW + 4] and x[-1] == LOW + 5 and x[-4] == LOW + 1:
      assert x.tolist() == [MARKERS["[CONTEXT]"], *tokens.tolist(), MARKERS["[COPY]"],
                            MARKERS["[START]"], LOW + 1, LOW + 2, MARKERS["[END]"], LOW + 5]
      return
  pytest.fail("the paper's example layout never came up")


@pytest.mark.parametrize("objective,params", [
    (prefix_lm.prefix_lm, {}),
    (deshuffling.deshuffling, dict(pct=0.5)),
    (infilling.infilling, dict(rate=0.15, mean_span=3, sentinel_ids=SENTINELS)),
    (autoencoding.autoencoding, dict(rate=0.15, mean_span=3, shuffle=True,
                                     sentinel_ids=SENTINELS)),
    (selective_copying.selective_copying, dict(num_spans=2, query_first=True, span_range=(4, 32),
                                               delimiter_range=(1, 8), marker_ids=MARKERS)),
])
def test_different_seeds_differ(objective, params):
  tokens = np.random.default_rng(0).integers(LOW, HIGH, 200).astype(np.int32)
  assert varies_with_seed(objective, tokens, params)


def test_paradigm_token_placement_is_balanced():
  tokens = np.arange(LOW, LOW + 10, dtype=np.int32)
  appended = sum(copying.copying(tokens, np.random.default_rng(s), paradigm_id=PARADIGM,
                                 append_prob=0.5)[0][-1] == PARADIGM for s in range(400))
  assert 160 < appended < 240
  assert copying.copying(tokens, np.random.default_rng(0), paradigm_id=PARADIGM,
                         append_prob=0.0)[0][0] == PARADIGM
  assert np.array_equal(copying.copying(tokens, np.random.default_rng(0))[0], tokens)


def test_span_counts_match_pieces():
  n = np.arange(0, 600)
  m, k = spans.span_counts(n, 0.5, 3, 256)
  assert np.all(k <= m) and np.all(m <= n) and np.all(k <= n - m + 1)
  assert spans.piece_span_counts(300, 0.5, 3, 256) == (m[300], k[300])
  starts, lengths = spans.random_spans(600, 300, 100, np.random.default_rng(0))
  assert lengths.sum() == 300 and len(starts) == 100 and lengths.min() >= 1
  assert np.all(starts[1:] > starts[:-1] + lengths[:-1])  # never touching
