"""Tokenizers: fixed special ids, specials unreachable from text, round trips, the cache."""
import io

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
import sentencepiece as spm

from birdie_jax.data import embedded_corpus
from birdie_jax.data import special_tokens
from birdie_jax.data import tokenizer as tokenizer_lib
from birdie_jax.errors import ConfigError

TEXT = "ROMEO.\nBut soft, what light through yonder window?\n\n  It is the east,\tJuliet 4.\n"
NON_ASCII = "Dès Noël où un zéphyr haï me vêt — ☃ 日本語 🐦\n"
SPECIAL_TEXT = (" ".join(special_tokens.ALL)
                + f"<sentinel_{special_tokens.NUM_SENTINELS}> <s> </s> "
                + "".join(special_tokens.ALL))
VOCAB = 768  # above the 531 reserved ids (specials and byte pieces)


@pytest.fixture(scope="module")
def documents():
  return list(embedded_corpus.passages()[:40])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def spm_tokenizer(documents, cache_dir):
  return tokenizer_lib.train_sentencepiece(documents, vocab_size=VOCAB, cache_dir=cache_dir)


@pytest.fixture(params=["sentencepiece", "bytes"])
def tokenizer(request, spm_tokenizer):
  return spm_tokenizer if request.param == "sentencepiece" else tokenizer_lib.ByteTokenizer()


def test_specials_have_fixed_distinct_ids(tokenizer):
  ids = [tokenizer.special_id(name) for name in special_tokens.ALL]
  assert ids == list(range(len(special_tokens.ALL)))
  assert tokenizer.pad_id == 0
  assert tokenizer.special_id("<begin>") == 4
  assert tokenizer.sentinel_ids.dtype == np.int32
  first = tokenizer.special_id("<sentinel_0>")
  count = special_tokens.NUM_SENTINELS
  assert np.array_equal(tokenizer.sentinel_ids, np.arange(first, first + count))
  assert tokenizer.special_id(f"<sentinel_{count - 1}>") == tokenizer.sentinel_ids[-1]


def test_text_never_encodes_to_a_special(tokenizer):
  ids = tokenizer.encode(SPECIAL_TEXT)
  assert ids.dtype == np.int32 and ids.min() >= len(special_tokens.ALL)
  assert ids.max() < tokenizer.vocab_size
  assert tokenizer.decode(ids) == SPECIAL_TEXT


@pytest.mark.parametrize("text", [TEXT, NON_ASCII, ""])
def test_round_trip(tokenizer, text):
  assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(spm_tokenizer, text):
  assert spm_tokenizer.decode(spm_tokenizer.encode(text)) == text


def test_decode_skips_specials(tokenizer):
  ids = tokenizer.encode(TEXT)
  with_specials = np.concatenate([[tokenizer.special_id("<begin>")], ids,
                                  tokenizer.sentinel_ids[:2], [tokenizer.pad_id]])
  assert tokenizer.decode(with_specials) == TEXT


def test_encode_batch_and_long_texts(spm_tokenizer, documents):
  texts = [TEXT, NON_ASCII, documents[0]]
  assert all(np.array_equal(a, spm_tokenizer.encode(t))
             for a, t in zip(spm_tokenizer.encode_batch(texts), texts))
  long_text = "".join(documents) * 2  # above the chunking threshold: encoded in threaded chunks
  assert len(long_text) > tokenizer_lib._ENCODE_CHUNK_CHARS
  assert spm_tokenizer.decode(spm_tokenizer.encode(long_text)) == long_text


def test_sentencepiece_compresses(spm_tokenizer, documents):
  assert spm_tokenizer.vocab_size == VOCAB
  assert len(documents[1]) / len(spm_tokenizer.encode(documents[1])) > 1.4


def test_cache_is_reused(documents, cache_dir, spm_tokenizer, monkeypatch, capsys):
  (path,) = (cache_dir / "tokenizer").glob(f"spm_*.model")
  mtime = path.stat().st_mtime_ns

  def no_training(**kwargs):
    raise AssertionError("retrained although the model is cached")

  monkeypatch.setattr(spm.SentencePieceTrainer, "train", no_training)
  again = tokenizer_lib.train_sentencepiece(documents, vocab_size=VOCAB, cache_dir=cache_dir)
  assert path.stat().st_mtime_ns == mtime
  assert np.array_equal(again.encode(TEXT), spm_tokenizer.encode(TEXT))
  assert not list((cache_dir / "tokenizer").glob("*.tmp"))
  assert capsys.readouterr().out == ""  # loading the cached model is silent
  with pytest.raises(AssertionError, match="retrained"):  # another sample is another model
    tokenizer_lib.train_sentencepiece(documents[1:], vocab_size=VOCAB, cache_dir=cache_dir)
  assert capsys.readouterr().out.startswith(f"tokenizer: training a {VOCAB}-piece BPE model on ")


def test_training_sample_is_deterministic_and_bounded(documents):
  sample = tokenizer_lib.training_sample(documents, max_chars=50_000)
  assert sample == tokenizer_lib.training_sample(documents, max_chars=50_000)
  assert 50_000 <= sum(map(len, sample)) < 50_000 + max(map(len, documents))


def test_build_tokenizer(documents, cache_dir, spm_tokenizer):
  def config(**kw):
    return {"tokenizer": {"kind": "sentencepiece", "vocab_size": VOCAB, "model_path": None, **kw}}

  assert isinstance(tokenizer_lib.build_tokenizer(config(kind="bytes"), documents, cache_dir),
                    tokenizer_lib.ByteTokenizer)
  built = tokenizer_lib.build_tokenizer(config(), documents, cache_dir)
  assert np.array_equal(built.encode(TEXT), spm_tokenizer.encode(TEXT))
  (path,) = (cache_dir / "tokenizer").glob("spm_*.model")
  loaded = tokenizer_lib.build_tokenizer(config(model_path=str(path)), [], cache_dir)
  assert np.array_equal(loaded.encode(TEXT), spm_tokenizer.encode(TEXT))
  with pytest.raises(ConfigError, match="unknown tokenizer kind"):
    tokenizer_lib.build_tokenizer(config(kind="wordpiece"), documents, cache_dir)
  with pytest.raises(ConfigError, match="too small"):
    tokenizer_lib.build_tokenizer(config(vocab_size=300), documents, cache_dir)


def test_bad_model_files(tmp_path):
  with pytest.raises(ConfigError, match="cannot read"):
    tokenizer_lib.SentencePieceTokenizer.load(tmp_path / "missing.model")
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"not a model")
  with pytest.raises(ConfigError, match="not a readable"):
    tokenizer_lib.SentencePieceTokenizer.load(garbage)
  plain = io.BytesIO()  # a valid model without the reserved control symbols
  spm.SentencePieceTrainer.train(sentence_iterator=iter([TEXT] * 20), model_writer=plain,
                                 vocab_size=60, minloglevel=2, hard_vocab_limit=False)
  with pytest.raises(ConfigError, match="lacks the reserved control symbols"):
    tokenizer_lib.SentencePieceTokenizer(plain.getvalue(), origin="plain.model")
