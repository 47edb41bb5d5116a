"""The lazy, indexed reader of the user's files: the same documents as reading them whole,
compressed or not; the cache is reused and invalidated; it pickles; splits; long documents;
Grain workers."""
import bz2
import dataclasses
import gzip
import json
import lzma
import os
import pathlib
import pickle
import tempfile

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
import zstandard

from birdie_jax.data import file_index
from birdie_jax.data import file_source
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.data.tokenizer import train_sentencepiece
from birdie_jax.errors import ConfigError



def _zstd_frames(data: bytes) -> bytes:
  """`data` as two zstd frames (as parallel compressors write), split mid-way (mid-line too)."""
  half = len(data) // 2
  return zstandard.compress(data[:half]) + zstandard.compress(data[half:])


_COMPRESS = {".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress,
             ".zst": _zstd_frames}


def _reference(files):
  """What an eager reader keeps from [(name, bytes)] in name order, and its skip counts."""
  docs = []
  counts = dict(empty=0, undecodable=0, malformed=0, no_text=0, binary=0, json_array=0)
  for name, data in sorted(files):
    if b"\0" in data:
      counts["binary"] += 1
    elif ".jsonl" in name and data.strip()[:1] + data.strip()[-1:] == b"[]":
      counts["json_array"] += 1
    elif ".jsonl" in name:
      units = [line for line in data.splitlines() if line.strip()]
    if b"\0" in data or ".jsonl" in name and data.strip()[:1] + data.strip()[-1:] == b"[]":
      continue
    if ".jsonl" not in name:
      units = [data]
    for unit in units:
      try:
        text = unit.decode("utf-8")
      except UnicodeDecodeError:
        counts["undecodable"] += 1
        continue
      if ".jsonl" in name:
        try:
          record = json.loads(text)
        except (ValueError, RecursionError):
          counts["malformed"] += 1
          continue
        if not isinstance(record, dict):
          counts["malformed"] += 1
          continue
        text = record.get("text")
        if not isinstance(text, str):
          counts["no_text"] += 1
          continue
      if text.strip():
        docs.append(text)
      else:
        counts["empty"] += 1
  return docs, counts


_texts = st.text(st.characters(codec="utf-8"), max_size=30)
_line = st.one_of(
    st.builds(lambda t, a: json.dumps({"text": t, "id": 1}, ensure_ascii=a).encode(), _texts,
              st.booleans()),
    st.builds(lambda t: f' \t{json.dumps({"text": t})}  '.encode(), _texts),
    st.sampled_from([b"", b"  ", b"\t", b" \x0c ", b'{"text": ""}', b'{"text": " \\n "}',
                     b'{"text": 5}', b'{"body": "x"}', b"[1, 2]", b'"text"', b"{broken",
                     b'{"text": "caf\xe9"}', b'\xef\xbb\xbf{"text": "bom"}', b'{"text": "a"} x',
                     b'\x0c{"text": "ff"}']),
    st.binary(max_size=12))


def _join(lines, seps, trailing):
  """Lines joined by separators, with or without one after the last."""
  data = b"".join(line + sep for line, sep in zip(lines, seps))
  return data if trailing or not lines else data[:len(data) - len(seps[len(lines) - 1])]


_jsonl = st.builds(_join, st.lists(_line, max_size=8),
                   st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=8, max_size=8),
                   st.booleans())
_text_file = st.one_of(st.binary(max_size=30), _texts.map(str.encode), st.just(b" \n\t"))
_files = st.lists(st.one_of(st.tuples(st.just(".jsonl"), _jsonl),
                            st.tuples(st.just(".txt"), _text_file)), min_size=1, max_size=4)


def _write(folder, files, suffix=""):
  """Writes the files as 00.jsonl, 01.txt, ... (compressed if `suffix`); their (name, bytes)."""
  named = []
  for i, (kind, data) in enumerate(files):
    name = f"{i:02d}{kind}"
    path = pathlib.Path(folder, name + suffix)
    path.write_bytes(_COMPRESS[suffix](data) if suffix else data)
    named.append((name, data))
  return named


def _open(folder, cache):
  return file_source.open_files(str(folder), "text", cache)


@settings(max_examples=25, deadline=None)
@given(files=_files, suffix=st.sampled_from(["", *_COMPRESS]))
def test_lazy_source_reads_what_the_eager_reader_kept(files, suffix):
  with tempfile.TemporaryDirectory() as tmp:
    data = pathlib.Path(tmp, "data")
    data.mkdir()
    expected, counts = _reference(_write(data, files, suffix))
    texts, stats = _open(data, pathlib.Path(tmp, "cache"))
    assert list(texts) == expected  # what is indexed reads as text: no '' left to find out later
    assert stats.documents == len(expected) and stats.unreadable == 0
    assert {name: getattr(stats, name) for name in counts} == counts


@settings(max_examples=25, deadline=None)
@given(files=_files)
def test_compressed_files_read_as_uncompressed(files):
  with tempfile.TemporaryDirectory() as tmp:
    results = []
    for suffix in ["", *_COMPRESS]:
      data = pathlib.Path(tmp, "data" + suffix)
      data.mkdir()
      _write(data, files, suffix)
      texts, stats = _open(data, pathlib.Path(tmp, "cache"))
      causes = [cause for cause, _ in stats.skipped_files]  # the names differ by their suffix
      results.append((list(texts), dataclasses.replace(stats, skipped_files=()), causes))
    assert all(r == results[0] for r in results[1:])


def test_fixture_counts_and_unreadable(tmp_path):
  (tmp_path / "a.jsonl").write_bytes(
      b'{"text": "one"}\n\n{broken\n{"text": "caf\xe9"}\n  \n{"x": 1}')
  (tmp_path / "b.txt").write_bytes(b"")
  (tmp_path / "c.txt.gz").write_bytes(b"not gzip")
  (tmp_path / "d.jsonl.xz").write_bytes(lzma.compress(b'{"text": "two"}')[:-8])  # truncated
  (tmp_path / "e.jsonl.zst").write_bytes(_zstd_frames(b'{"text": "three"}\n' * 50)[:-8])
  (tmp_path / "f.txt.zst").write_bytes(b"not zstd")
  texts, stats = _open(tmp_path, tmp_path / ".cache")
  assert list(texts) == ["one"]
  assert (stats.documents, stats.empty, stats.undecodable, stats.malformed,
          stats.unreadable, stats.no_text) == (1, 1, 1, 1, 4, 1)
  with pytest.raises(IndexError):
    texts[1]
  assert texts[-1] == "one"


def _scans(monkeypatch):
  """Counts how often a file's bytes are scanned."""
  calls = []
  for name in ("_scan_jsonl", "_scan_text"):
    scan = getattr(file_index, name)
    monkeypatch.setattr(file_index, name,
                        lambda *args, scan=scan: calls.append(1) or scan(*args))
  return calls


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch, capsys):
  scans = _scans(monkeypatch)
  data, cache = tmp_path / "data", tmp_path / "cache"
  data.mkdir()
  (data / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'))
  (data / "b.txt").write_text("three")
  assert list(_open(data, cache)[0]) == ["one", "two", "three"] and len(scans) == 2
  said = capsys.readouterr().out.splitlines()  # a first indexing, which can take minutes, says so
  assert said[0].startswith("data: indexing 2 files (") and str(cache.resolve()) in said[0]
  assert said[1].startswith("data: indexed 3 documents in ") and len(said) == 2
  cached = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
  assert not [p for p in cached if p.suffix == ".tmp"]
  assert list(_open(data, cache)[0]) == ["one", "two", "three"] and len(scans) == 2
  assert capsys.readouterr().out == ""  # a cached index is silent
  assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == cached
  (data / "b.txt").write_text("three, changed")
  os.utime(data / "b.txt", ns=(1, 1))  # a new mtime whatever the clock's resolution
  assert list(_open(data, cache)[0]) == ["one", "two", "three, changed"] and len(scans) == 3
  (data / "c.txt").write_text("four")
  assert list(_open(data, cache)[0])[-1] == "four" and len(scans) == 4  # only the new file
  for copy in cache.glob("*.data"):  # a deleted decompressed copy is made again
    copy.unlink()
  assert list(_open(data, cache)[0])[:2] == ["one", "two"] and len(scans) == 5


def test_cache_folder_that_cannot_be_written(tmp_path):
  (tmp_path / "a.txt").write_text("text")
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="cannot write the data index cache .*BIRDIE_JAX_CACHE_DIR"):
    _open(tmp_path / "a.txt", tmp_path / "file" / "cache")


def test_default_cache_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("BIRDIE_JAX_CACHE_DIR", str(tmp_path))
  assert file_source.default_cache_dir() == tmp_path / "data_index"
  (tmp_path / "a.txt").write_text("text")
  assert list(load_documents(str(tmp_path / "a.txt"), "train", val_fraction=0.0)) == ["text"]
  assert list((tmp_path / "data_index").glob("*.npy"))
  monkeypatch.delenv("BIRDIE_JAX_CACHE_DIR")
  assert file_source.default_cache_dir() == pathlib.Path.home() / ".cache/birdie_jax/data_index"


def test_pickles_small_and_reads_the_same(tmp_path):
  lines = [json.dumps({"text": f"document {i} ☃\nwith a newline"}) for i in range(300)]
  (tmp_path / "a.jsonl").write_text("\n".join(lines))
  docs = load_documents(str(tmp_path / "a.jsonl"), "train", val_fraction=0.2,
                        cache_dir=tmp_path / "cache")
  docs[0]  # memory-maps the index; that is not pickled
  blob = pickle.dumps(docs)
  assert len(blob) < len(docs) * 8 + 2000  # the split's indices, not the texts or bounds
  assert list(pickle.loads(blob)) == list(docs)


def test_split_is_disjoint_covering_and_stable(tmp_path):
  (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n"
                                            for i in range(300)))
  (tmp_path / "b.txt").write_text("a text file")
  load = lambda split, fraction: list(load_documents(str(tmp_path), split, val_fraction=fraction,
                                                     cache_dir=tmp_path / ".cache"))
  train, val, everything = load("train", 0.2), load("validation", 0.2), load("train", 0.0)
  assert 30 <= len(val) <= 90 and not set(train) & set(val)
  assert sorted(train + val) == sorted(everything) and len(everything) == 301
  assert val == load("validation", 0.2)


def test_no_usable_document_is_one_error_line(tmp_path):
  (tmp_path / "a.jsonl").write_text('{"content": "x"}\n' * 50)
  with pytest.raises(ConfigError, match=r"no non-empty UTF-8 document \(50 documents skipped "
                     r"\(50 without a string text field\); does data.text_field 'text' name"):
    load_documents(str(tmp_path / "a.jsonl"), "train", val_fraction=0.1)
  assert len(load_documents(str(tmp_path / "a.jsonl"), "train", val_fraction=0.1,
                            text_field="content")) > 30
  (tmp_path / "b.jsonl").write_text("\n \n\r\n")
  with pytest.raises(ConfigError, match="no non-empty UTF-8 document"):
    load_documents(str(tmp_path / "b.jsonl"), "train", val_fraction=0.1)


def test_long_document_is_read_whole_and_packed(tmp_path):
  long = "".join(f"line {i} of a very long document\n" for i in range(40_000))
  assert len(long) > 1_000_000  # the former reader cut documents longer than this into parts
  (tmp_path / "a.jsonl").write_text(json.dumps({"text": long}) + "\n" + json.dumps({"text": "hi"}))
  docs = load_documents(str(tmp_path / "a.jsonl"), "train", val_fraction=0.0,
                        cache_dir=tmp_path / "cache")
  assert list(docs) == [long, "hi"]
  tokenizer = train_sentencepiece(docs, vocab_size=768, cache_dir=tmp_path)
  ids = tokenizer.encode(long)  # in chunks
  assert tokenizer.decode(ids) == long
  iterator = iter(make_train_dataset(docs, tokenizer, seq_len=128, batch_size=4, seed=0))
  batches = [next(iterator) for _ in range(3)]
  iterator.close()
  rows = [tokenizer.decode(b["targets"][r][b["segment_ids"][r] == 1])
          for b in batches for r in range(4)]
  assert sum(row in long for row in rows) >= 10


def test_grain_worker_reads_a_file_source(tmp_path):
  (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress("".join(
      json.dumps({"text": f"document {i} " * (i % 7 + 1)}) + "\n" for i in range(50)).encode()))
  docs = load_documents(str(tmp_path / "a.jsonl.gz"), "train", val_fraction=0.0,
                        cache_dir=tmp_path / "cache")
  batches = []
  for workers in (0, 1):
    iterator = iter(make_train_dataset(docs, ByteTokenizer(), seq_len=32, batch_size=2, seed=0,
                                       num_workers=workers))
    batches.append([next(iterator) for _ in range(3)])
    iterator.close()
  assert all(np.array_equal(a[k], b[k]) for a, b in zip(*batches) for k in a)


def test_cache_inside_the_data_is_not_read_as_data(tmp_path):
  (tmp_path / "a.txt").write_text("text")
  for _ in range(2):
    docs = load_documents(str(tmp_path), "train", val_fraction=0.0, cache_dir=tmp_path / "cache")
    assert list(docs) == ["text"] and docs.stats.documents == 1
  with pytest.raises(ConfigError, match=r"no non-empty UTF-8 document \(no files read\)"):
    load_documents(str(tmp_path / "cache"), "train", val_fraction=0.0, cache_dir=tmp_path / "cache")


def test_zstd_frames_with_long_windows_are_read(tmp_path):
  """`zstd --long=30` frames: a decompressor's default window limit (128 MiB) refuses them."""
  data = b"".join(b'{"text": "line %d"}\n' % i for i in range(500))
  params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30, enable_ldm=True,
                                                           write_content_size=False)
  with open(tmp_path / "long.jsonl.zst", "wb") as f:
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as writer:
      writer.write(data)
  texts, stats = _open(tmp_path, tmp_path / ".cache")
  assert list(texts) == [f"line {i}" for i in range(500)] and stats.unreadable == 0
