"""The Grain pipeline: determinism, per-process shards, exact resume (state, Orbax), validation."""
import numpy as np
import orbax.checkpoint as ocp
import pytest

import grain
from birdie_jax.data import packing
from birdie_jax.data import special_tokens
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.pipeline import make_validation_batches
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.data.tokenizer import train_sentencepiece
from birdie_jax.errors import ConfigError

SEQ_LEN, BATCH = 32, 4
TOKENIZER = ByteTokenizer()


def _documents(n=40):
  """Document i repeats one printable character, so every token tells which document it is from;
  lengths run from 0 to several rows."""
  rng = np.random.default_rng(0)
  return [chr(33 + i) * int(rng.integers(0, 5 * SEQ_LEN)) for i in range(n)]


DOCUMENTS = _documents()


def _dataset(seed=0, documents=DOCUMENTS, **kwargs):
  return make_train_dataset(documents, TOKENIZER, seq_len=SEQ_LEN, batch_size=BATCH, seed=seed,
                            **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _equal(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _doc_ids(batches):
  """Indices of the documents whose tokens appear as targets."""
  targets = np.concatenate([b["targets"][b["loss_mask"] > 0] for b in batches])
  return set((targets - TOKENIZER.encode("!")[0]).tolist())


def test_batch_format():
  iterator = iter(_dataset())
  batch = next(iterator)
  iterator.close()
  assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
      k: (np.dtype(d), (BATCH, SEQ_LEN)) for k, d in packing.FEATURES.items()}
  begin = TOKENIZER.special_id(special_tokens.BEGIN)
  seg, inputs, targets = batch["segment_ids"], batch["inputs"], batch["targets"]
  same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  assert np.array_equal(targets[:, :-1][same], inputs[:, 1:][same])  # next-token alignment
  assert np.all(inputs[batch["positions"] == 0][seg[batch["positions"] == 0] > 0] == begin)
  assert np.array_equal(batch["loss_mask"] > 0, seg > 0) and not batch["prefix_mask"].any()


def test_deterministic_per_seed():
  first, same, other = iter(_dataset(0)), iter(_dataset(0)), iter(_dataset(1))
  a, b, c = _take(first, 6), _take(same, 6), _take(other, 6)
  assert _equal(a, b) and not _equal(a, c)
  for it in (first, same, other):
    it.close()


def test_process_shards_are_disjoint():
  seen = []
  for p in range(2):
    iterator = iter(_dataset(process_index=p, process_count=2))
    seen.append(_doc_ids(_take(iterator, 30)))
    iterator.close()
  nonempty = {i for i, d in enumerate(DOCUMENTS) if d}
  assert seen[0] == {i for i in nonempty if i % 2 == 0}
  assert seen[1] == {i for i in nonempty if i % 2 == 1}


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_resume_from_state(k):
  iterator = iter(_dataset(gap=1))
  _take(iterator, k)
  state = iterator.get_state()
  expected = _take(iterator, 5)
  restored = iter(_dataset(gap=1))
  restored.set_state(state)
  assert restored.get_state() == state
  assert _equal(_take(restored, 5), expected)
  iterator.close()
  restored.close()


def test_resume_mid_document():
  iterator = iter(_dataset())
  states = []
  for _ in range(10):
    next(iterator)
    states.append(iterator.get_state())
  iterator.close()
  assert any(s["in_document"] and s["offset"] > 0 for s in states)  # pieces cut mid-document


def test_orbax_checkpoint_round_trip(tmp_path):
  iterator = iter(_dataset(seed=3))
  _take(iterator, 4)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 4)
  restored = iter(_dataset(seed=3))
  manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  assert _equal(_take(restored, 4), expected)
  manager.close()
  iterator.close()
  restored.close()


def test_validation_batches_are_fixed():
  kwargs = dict(seq_len=SEQ_LEN, batch_size=BATCH, num_batches=3, seed=5)
  first = make_validation_batches(DOCUMENTS[:10], TOKENIZER, **kwargs)
  assert len(first) == 3 and _equal(first, make_validation_batches(DOCUMENTS[:10], TOKENIZER,
                                                                   **kwargs))
  iterator = iter(_dataset(seed=5, documents=DOCUMENTS[:10]))
  assert _equal(first, _take(iterator, 3))  # the training layout
  iterator.close()


def test_embedded_corpus_with_sentencepiece(tmp_path):
  documents = load_documents("embedded", "validation", val_fraction=0.05)
  tokenizer = train_sentencepiece(documents, vocab_size=768, cache_dir=tmp_path)
  iterator = iter(make_train_dataset(documents, tokenizer, seq_len=64, batch_size=2, seed=0))
  batch = next(iterator)
  iterator.close()
  row = batch["targets"][0][batch["segment_ids"][0] == 1]
  assert any(tokenizer.decode(row) in d for d in documents)


def test_worker_process_gives_same_batches():
  in_process, worker = iter(_dataset()), iter(_dataset(num_workers=1))
  assert _equal(_take(worker, 3), _take(in_process, 3))
  in_process.close()
  worker.close()


def test_errors():
  with pytest.raises(ConfigError, match="gets no document"):
    _dataset(documents=DOCUMENTS[:1], process_index=1, process_count=2)
  with pytest.raises(ConfigError, match="seq_len"):
    make_train_dataset(DOCUMENTS, TOKENIZER, seq_len=0, batch_size=1, seed=0)
  with pytest.raises(ConfigError, match="process_index"):
    _dataset(process_index=2, process_count=2)
