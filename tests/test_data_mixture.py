"""The Birdie mixture in the packer and the Grain pipeline: layout, no lost token, little padding,
weights changing within one batch, exact resume with the weights, per-configuration validation."""
from collections import Counter
import gc

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy import stats

import grain
from birdie_jax.data import packing
from birdie_jax.data import special_tokens
from birdie_jax.config import default_config
from birdie_jax.config import validate_config
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.data.pack_dataset import planner_states
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.pipeline import make_validation_batches
from birdie_jax.data.pipeline import make_validation_sets
from birdie_jax.data.pipeline import mixture_weights
from birdie_jax.data.pipeline import set_mixture_weights
from birdie_jax.data.pipeline import without_mixture_weights
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.objectives.mixture import state_weights

TOKENIZER = ByteTokenizer()
BEGIN, PAD, GAP = (TOKENIZER.special_id(t) for t in (special_tokens.BEGIN, special_tokens.PAD,
                                                      special_tokens.GAP))
PARADIGM_CLASS = {TOKENIZER.special_id(token): name
                  for name, token in special_tokens.PARADIGMS.items()}
SENTINELS = TOKENIZER.sentinel_ids
MARK = {name: TOKENIZER.special_id(name) for name in special_tokens.MARKERS}
FIRST_TEXT_ID = len(special_tokens.ALL)
MIXTURES = {seq_len: make_mixture(TOKENIZER, curriculum="birdie", seq_len=seq_len)
            for seq_len in (64, 128, 256)}


def examples(batch):
  """(class, X, Y) of every packed example, row by row, after checking its layout."""
  out = []
  for r in range(batch["inputs"].shape[0]):
    row = {k: v[r] for k, v in batch.items()}
    seg = row["segment_ids"]
    outside = seg == 0
    assert np.all(np.isin(row["inputs"][outside], [PAD, GAP]))
    assert not row["prefix_mask"][outside].any()
    assert np.all(row["targets"][outside] == 0) and np.all(row["loss_mask"][outside] == 0)
    ids = seg[~outside]
    assert np.all(np.diff(ids) >= 0) and np.array_equal(np.unique(ids), np.arange(1, ids.max() + 1))
    for k in np.unique(ids):
      where = np.flatnonzero(seg == k)
      assert np.array_equal(where, np.arange(where[0], where[-1] + 1))
      ex = {name: value[where] for name, value in row.items()}
      n_x = int(ex["prefix_mask"].sum())
      assert ex["prefix_mask"][:n_x].all()
      assert np.array_equal(ex["positions"], np.arange(len(where)))
      assert np.array_equal(ex["loss_mask"] > 0, np.arange(len(where)) >= n_x)
      x, y = ex["inputs"][:n_x], ex["targets"][n_x:]
      assert ex["inputs"][n_x] == BEGIN and np.array_equal(ex["inputs"][n_x + 1:], y[:-1])
      assert np.all(ex["targets"][:n_x] == 0)
      paradigm = x[0] if x[0] in PARADIGM_CLASS else x[-1]
      body = x[1:] if x[0] == paradigm else x[:-1]
      out.append((PARADIGM_CLASS[int(paradigm)], body, y))
  return out


def piece_of(name, x, y):
  """The document piece an example was made from."""
  if name in ("next_token_prediction", "copying", "deshuffling", "autoencoding"):
    return y
  if name == "prefix_lm":
    return np.concatenate([x, y])
  if name == "infilling":
    ends = np.flatnonzero(np.isin(y, SENTINELS))
    spans = dict(zip(y[ends].tolist(), np.split(y, ends + 1)[:-1]))
    return np.concatenate([spans[t][:-1] if t in spans else [t] for t in x.tolist()])
  start = int(np.flatnonzero(x == MARK["[CONTEXT]"])[0]) + 1
  copy = np.flatnonzero(x == MARK["[COPY]"])
  return x[start:copy[0]] if copy[0] > start else x[start:]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([64, 128, 256]), st.lists(st.integers(0, 1100), max_size=8),
       st.integers(0, 3), st.integers(0, 2**31))
def test_mixture_rows_hold_every_token_once(seq_len, lengths, gap, seed):
  rng = np.random.default_rng(seed)
  documents = [rng.integers(FIRST_TEXT_ID, FIRST_TEXT_ID + 50, n).astype(np.int32)
               for n in lengths]
  batch, packed = packing.pack_documents(documents, seq_len=seq_len, begin_id=BEGIN, pad_id=PAD,
                                         make_example=MIXTURES[seq_len], gap=gap, gap_id=GAP,
                                         seed=seed)
  assert {k: (v.dtype, v.shape[1]) for k, v in batch.items()} == {
      k: (np.dtype(d), seq_len) for k, d in packing.FEATURES.items()}
  assert batch["inputs"].max(initial=0) < TOKENIZER.vocab_size
  pieces = [piece_of(*ex) for ex in examples(batch)]
  expected = [d for d in documents if len(d)]
  assert np.array_equal(np.concatenate(pieces or [np.zeros(0, np.int32)]),
                        np.concatenate(expected or [np.zeros(0, np.int32)]))
  assert packed.padding_fraction == pytest.approx(packing.padding_fraction(batch)
                                                  if packed.rows else 0.0)


def test_mixture_padding_is_small():
  rng = np.random.default_rng(0)
  documents = [rng.integers(FIRST_TEXT_ID, FIRST_TEXT_ID + 50, n).astype(np.int32)
               for n in rng.integers(300, 3000, 120)]
  _, packed = packing.pack_documents(documents, seq_len=256, begin_id=BEGIN, pad_id=PAD,
                                     make_example=MIXTURES[256])
  assert packed.padding_fraction < 0.08


TEXTS = ["".join(chr(FIRST_TEXT_ID - len(special_tokens.ALL) + 33 + (i + j) % 60)
                 for j in range(200 + 37 * i)) for i in range(60)]


def _dataset(mixture, batch_size=4, seed=0, texts=TEXTS, **kwargs):
  return make_train_dataset(texts, TOKENIZER, seq_len=mixture.seq_len, batch_size=batch_size,
                            seed=seed, make_example=mixture, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _equal(a, b):
  return len(a) == len(b) and all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def _class_weights(mixture, by_class):
  """Configuration weights giving class c the weight by_class[c], uniform within a class."""
  index = mixture.curriculum.class_index
  per_class = np.array([by_class.get(c, 0.0) for c in mixture.curriculum.classes])
  return per_class[index] / np.bincount(index)[index]


def test_new_weights_take_effect_within_one_batch():
  mixture = MIXTURES[128]
  classes = mixture.curriculum.classes
  old = {"copying": 0.7, "infilling": 0.1, "next_token_prediction": 0.2}
  new = {"deshuffling": 0.5, "prefix_lm": 0.2, "autoencoding": 0.3}
  iterator = iter(_dataset(mixture.with_weights(_class_weights(mixture, old)), batch_size=1024))
  next(iterator)
  set_mixture_weights(iterator, _class_weights(mixture, new))
  assert np.allclose(mixture_weights(iterator), _class_weights(mixture, new))
  counts = Counter(name for name, _, _ in examples(next(iterator)))
  iterator.close()
  observed = np.array([counts.get(c, 0) for c in classes])
  assert observed.sum() > 2000
  for weights, fits in ((new, True), (old, False)):
    expected = np.array([weights.get(c, 0.0) for c in classes]) * observed.sum()
    support = expected > 0
    if fits:
      assert not observed[~support].any()  # nothing from classes without weight
      assert stats.chisquare(observed[support], expected[support]).pvalue > 1e-3
    else:
      assert observed[~support].sum() > 0.5 * observed.sum()


def _change_weights_midway(mixture, weights, num_workers):
  """(2 batches after a weight change, the state then, the 3 batches after that)."""
  iterator = iter(_dataset(mixture, gap=1, num_workers=num_workers))
  _take(iterator, 2)
  if weights is not None:
    set_mixture_weights(iterator, weights)
  after = _take(iterator, 2)
  state = iterator.get_state()
  expected = _take(iterator, 3)
  iterator.close()
  return after, state, expected


def test_weight_changes_reach_workers_and_restore_exactly():
  mixture = MIXTURES[64]
  weights = np.random.default_rng(1).dirichlet(np.ones(len(mixture.names)))
  unchanged, _, _ = _change_weights_midway(mixture, None, 0)
  runs = {n: _change_weights_midway(mixture, weights, n) for n in (0, 1)}
  assert not _equal(runs[0][0], unchanged)
  assert _equal(runs[0][0] + runs[0][2], runs[1][0] + runs[1][2])  # workers: no stale backlog
  for num_workers, (_, state, expected) in runs.items():
    restored = iter(_dataset(mixture, gap=1, num_workers=num_workers))
    restored.set_state(state)
    assert np.allclose(mixture_weights(restored), weights)
    assert _equal(_take(restored, 3), expected)
    restored.close()


def test_orbax_round_trip_keeps_weights(tmp_path):
  mixture = MIXTURES[64]
  weights = _class_weights(mixture, {"copying": 0.5, "selective_copying": 0.5})
  iterator = iter(_dataset(mixture, seed=3))
  _take(iterator, 2)
  set_mixture_weights(iterator, weights)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 3)
  restored = iter(_dataset(mixture, seed=3))
  manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  assert np.allclose(mixture_weights(restored), weights)
  assert _equal(_take(restored, 3), expected)
  manager.close()
  for it in (iterator, restored):
    it.close()


def test_a_state_saved_without_weights_restores_the_position_and_the_built_weights():
  mixture = MIXTURES[64]
  weights = np.random.default_rng(2).dirichlet(np.ones(len(mixture.names)))
  iterator = iter(_dataset(mixture, gap=1))
  _take(iterator, 2)
  set_mixture_weights(iterator, weights)
  _take(iterator, 1)
  view = without_mixture_weights(iterator)
  state = view.get_state()
  del view
  gc.collect()  # a view owns nothing: collecting it leaves the iterator open
  expected = _take(iterator, 3)
  iterator.close()
  assert planner_states(state)
  assert all(state_weights(planner) is None for planner in planner_states(state))
  restored = iter(_dataset(mixture, gap=1))
  restored.set_state(state)
  assert np.array_equal(mixture_weights(restored), mixture.weights)  # the weights as built
  set_mixture_weights(restored, weights)  # the caller's copy of the mixture (the controller's)
  assert _equal(_take(restored, 3), expected)
  restored.close()


def test_a_runs_curriculum_is_built_once_and_shared_read_only():
  config = default_config()
  config.curriculum, config.train.seq_len = "birdie", 64
  validate_config(config)  # builds it (the lengths must fit the rows)
  curriculum = run_curriculum(config)
  # make_mixture and the evaluations get the same object (a fresh mixture: the module's MIXTURES
  # were built long ago, and a worker running other files may have evicted them from the cache)
  mixture = make_mixture(TOKENIZER, curriculum="birdie", seq_len=64)
  assert mixture.curriculum is curriculum and run_curriculum(config) is curriculum
  with pytest.raises(ValueError, match="read-only"):
    curriculum.weights[0] = 1.0


def test_bad_weights_leave_the_iterator_usable():
  mixture = MIXTURES[64]
  iterator = iter(_dataset(mixture))
  next(iterator)
  state = iterator.get_state()
  with pytest.raises(ValueError, match="mixture weights"):
    set_mixture_weights(iterator, np.ones(len(mixture.names)))
  assert iterator.get_state() == state
  next(iterator)
  iterator.close()
  plain = iter(make_train_dataset(TEXTS, TOKENIZER, seq_len=64, batch_size=2, seed=0))
  with pytest.raises(ValueError, match="no objective mixture"):
    set_mixture_weights(plain, mixture.weights)
  plain.close()
  with pytest.raises(ConfigError, match="built for seq_len 64"):
    make_train_dataset(TEXTS, TOKENIZER, seq_len=128, batch_size=2, seed=0, make_example=mixture)


def test_validation_sets_per_configuration():
  mixture = make_mixture(TOKENIZER, curriculum="ul2", seq_len=128)
  kwargs = dict(seq_len=128, batch_size=2, num_batches=2, seed=4)
  sets = make_validation_sets(TEXTS[:10], TOKENIZER, mixture, **kwargs)
  assert list(sets) == list(mixture.names)
  again = make_validation_sets(TEXTS[:10], TOKENIZER, mixture, **kwargs)
  for name, batches in sets.items():
    assert len(batches) == 2 and _equal(batches, again[name])
    objective = name.split("/")[0]
    assert {ex[0] for b in batches for ex in examples(b)} == {objective}
  name = mixture.names[2]
  training = iter(_dataset(mixture.only(name), batch_size=2, seed=4, texts=TEXTS[:10]))
  assert _equal(sets[name], _take(training, 2))  # exactly the training layout
  training.close()
  assert _equal(sets[name], make_validation_batches(TEXTS[:10], TOKENIZER,
                                                    make_example=mixture.only(name), **kwargs))


def test_ntp_curriculum_is_plain_next_token_prediction():
  ntp = make_mixture(TOKENIZER, curriculum="ntp", seq_len=64)
  plain = iter(make_train_dataset(TEXTS, TOKENIZER, seq_len=64, batch_size=4, seed=0))
  mixed = iter(_dataset(ntp))
  assert _equal(_take(plain, 3), _take(mixed, 3))
  for it in (plain, mixed):
    it.close()
