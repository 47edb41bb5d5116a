"""Text sources: the embedded corpus, the user's files and JSONL, TFDS array_record; bad inputs."""
import gzip
import json

import numpy as np
import pytest

from birdie_jax.data import documents, embedded_corpus
from birdie_jax.data.sources import load_documents
from birdie_jax.errors import ConfigError


def test_embedded_passages_and_splits():
  passages = embedded_corpus.passages()
  assert 900 <= len(passages) <= 1500
  assert sum(map(len, passages)) == sum(len(t) for _, t in embedded_corpus.read_works())
  lengths = np.array([len(p) for p in passages])
  assert lengths.min() >= 2_000 and np.median(lengths) < 8_000
  train = load_documents("embedded", "train", val_fraction=0.05)
  val = load_documents("embedded", "validation", val_fraction=0.05)
  assert 20 <= len(val) <= 110 and len(train) + len(val) == len(passages)
  assert not set(train) & set(val)
  assert list(val) == list(load_documents("embedded", "validation", val_fraction=0.05))
  assert train.stats.documents == len(passages)


@pytest.fixture
def files(tmp_path):
  (tmp_path / "a.txt").write_text("first document\n")
  (tmp_path / "b.md").write_text("second document")
  (tmp_path / "empty.txt").write_text("  \n\n")
  (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "c.txt").write_text("third ☃ document")
  (tmp_path / "sub" / "d.txt.gz").write_bytes(gzip.compress(b"fourth document"))
  (tmp_path / "sub" / "broken.txt.gz").write_bytes(b"not gzip at all")
  (tmp_path / ".hidden").write_text("never read")
  (tmp_path / ".git").mkdir()
  (tmp_path / ".git" / "config").write_text("never read either")
  lines = [json.dumps({"text": "json one", "id": 1}).encode(), b"{not json",
           json.dumps({"body": "no text field"}).encode(), json.dumps({"text": ""}).encode(),
           b'{"text": "caf\xe9"}', b"", json.dumps({"text": "json two"}).encode()]
  (tmp_path / "j").mkdir()
  (tmp_path / "j" / "x.jsonl").write_bytes(b"\n".join(lines))
  (tmp_path / "j" / "y.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[:1])))
  return tmp_path


def test_directory_of_text_files(files):
  docs = load_documents(str(files), "train", val_fraction=0.0)
  assert sorted(d for d in docs if d) == sorted([
      "first document\n", "second document", "third ☃ document", "fourth document", "json one",
      "json two", "json one"])
  assert "" not in list(docs)  # JSON objects without a non-empty string text: skipped, counted
  s = docs.stats
  assert (s.documents, s.empty, s.undecodable, s.malformed, s.unreadable, s.no_text) == (
      7, 2, 2, 1, 1, 1)


def test_file_glob_and_jsonl(files):
  single = load_documents(str(files / "a.txt"), "train", val_fraction=0.0)
  assert list(single) == ["first document\n"]
  assert sorted(load_documents(str(files / "**" / "*.txt"), "train", val_fraction=0.0)) == [
      "first document\n", "third ☃ document"]
  jsonl = load_documents(str(files / "j" / "x.jsonl"), "train", val_fraction=0.0)
  assert list(jsonl) == ["json one", "json two"]
  body = load_documents(str(files / "j" / "x.jsonl"), "train", val_fraction=0.0, text_field="body")
  assert list(body) == ["no text field"] and body.stats.no_text == 3
  assert list(load_documents(str(files / "j" / "*.gz"), "train", val_fraction=0.0)) == ["json one"]


def test_user_validation_split_is_disjoint_and_stable(tmp_path):
  for i in range(200):
    (tmp_path / f"doc{i:03d}.txt").write_text(f"document number {i}")
  train = load_documents(str(tmp_path), "train", val_fraction=0.1)
  val = load_documents(str(tmp_path), "validation", val_fraction=0.1)
  assert 5 <= len(val) <= 40 and len(train) + len(val) == 200
  assert not set(train) & set(val)
  assert list(val) == list(load_documents(str(tmp_path), "validation", val_fraction=0.1))


def test_user_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    load_documents(str(tmp_path / "missing"), "train", val_fraction=0.1)
  with pytest.raises(ConfigError, match="matches no files"):
    load_documents(str(tmp_path / "*.txt"), "train", val_fraction=0.1)
  with pytest.raises(ConfigError, match="contains no files"):
    load_documents(str(tmp_path), "train", val_fraction=0.1)
  (tmp_path / "blank.txt").write_text("\n\n")
  (tmp_path / "bytes.bin").write_bytes(b"\xff\xfe\x00")
  with pytest.raises(ConfigError, match="no non-empty UTF-8 document"):
    load_documents(str(tmp_path), "train", val_fraction=0.1)
  with pytest.raises(ConfigError, match="data source is empty"):
    load_documents("", "train", val_fraction=0.1)
  with pytest.raises(ConfigError, match="unknown data split"):
    load_documents("embedded", "test", val_fraction=0.1)
  with pytest.raises(ConfigError, match="val_fraction"):
    load_documents("embedded", "train", val_fraction=1.5)
  with pytest.raises(ConfigError, match="bad source spec"):
    load_documents("tfds:", "train", val_fraction=0.1)
  with pytest.raises(ConfigError, match="not prepared"):
    load_documents("tfds:nothing_here", "train", val_fraction=0.1, tfds_data_dir=str(tmp_path))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """Prepares two tiny array_record datasets (no TensorFlow), with and without validation."""
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = tmp_path_factory.mktemp("tfds")

  def make(dataset_name, splits):
    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
      name = dataset_name
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"content": tfds.features.Text(), "label": np.int32}))

      def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, n) for split, n in splits.items()}

      def _generate_examples(self, split, n):
        for i in range(n):
          yield i, {"content": f"{split} text {i} é", "label": i}

    Builder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()

  make("tiny_texts", {"train": 60})
  make("tiny_split", {"train": 30, "validation": 7})
  return str(data_dir)


def test_tfds_source(tfds_dir, monkeypatch):
  train = load_documents("tfds:tiny_texts", "train", val_fraction=0.2, text_field="content",
                         tfds_data_dir=tfds_dir)
  val = load_documents("tfds:tiny_texts:1.0.0", "validation", val_fraction=0.2,
                       text_field="content", tfds_data_dir=tfds_dir)
  assert len(train) + len(val) == 60 and len(val) > 0
  assert sorted(list(train) + list(val)) == sorted(f"train text {i} é" for i in range(60))
  monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
  own = load_documents("tfds:tiny_split", "validation", val_fraction=0.2, text_field="content")
  assert sorted(own) == sorted(f"validation text {i} é" for i in range(7))
  assert len(load_documents("tfds:tiny_split", "train", val_fraction=0.2,
                            text_field="content")) == 30
  with pytest.raises(ConfigError, match="no feature 'text'"):
    load_documents("tfds:tiny_split", "train", val_fraction=0.2)


@pytest.mark.parametrize("chunk", [1000, 1 << 22])
def test_split_indices_in_chunks_match_the_hash_rule(monkeypatch, chunk):
  """Chunked, int32: the same split as hashing every index at once (runs keep their splits)."""
  monkeypatch.setattr(documents, "SPLIT_CHUNK", chunk)
  n, fraction = 3_500, 0.1
  ids = np.arange(n, dtype=np.uint64)
  mixed = documents._splitmix64(ids)  # pylint: disable=protected-access
  held_out = (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction
  val = documents.split_indices(n, "validation", fraction)
  train = documents.split_indices(n, "train", fraction)
  assert val.dtype == train.dtype == np.int32
  np.testing.assert_array_equal(val, np.flatnonzero(held_out))
  np.testing.assert_array_equal(train, np.flatnonzero(~held_out))
  assert 250 < len(val) < 450
