"""Data sources II: directories read only known text formats and list the rest by cause in one
line; JSONL lines without a string text field are counted; data.document_separator splits a text
file into documents; a one-document source is cut so that validation is not empty."""
import gzip
import io
import json
import tarfile

from birdie_jax.data.sources import load_documents, skipped_note
from birdie_jax.train import loop
from helpers import tiny_config

_PLAY = "".join(f"ACT {i}. Enter a player, speaking line {i} of the play.\n" for i in range(400))


def _tar_gz(name: str, data: bytes) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def _junk(folder):
  """Files a data directory should not feed to the model as text."""
  (folder / "rows.json").write_text(json.dumps([{"text": "in an array"}] * 3, indent=1))
  (folder / "corpus.tar.gz").write_bytes(_tar_gz("inside.txt", b"archived text"))
  (folder / "zeros.txt").write_bytes(b"\0" * 4096)
  (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)


def test_a_directory_reads_only_text_files_and_lists_the_rest_by_cause(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "a.txt").write_text("a text file")
  (data / "b.jsonl").write_text(json.dumps({"text": "a JSONL line"}) + "\n")
  (data / "c.ndjson.gz").write_bytes(gzip.compress(json.dumps({"text": "ndjson"}).encode()))
  _junk(data)
  docs = load_documents(str(data), "train", val_fraction=0.0, cache_dir=tmp_path / "cache")
  assert sorted(docs) == ["a JSONL line", "a text file", "ndjson"]
  assert skipped_note(docs.stats) == (
      "4 files skipped (2 not a known text format: corpus.tar.gz, weights.bin; "
      "1 binary (NUL bytes): zeros.txt; 1 a JSON array, not JSON lines: rows.json)")


def test_jsonl_lines_without_a_string_text_field_are_counted(tmp_path):
  lines = [{"text": "kept"}, {"body": "no text field"}, {"text": 7}, {"text": None},
           {"text": ["a", "list"]}, {"text": "  "}, {"text": "kept too"}]
  (tmp_path / "rows.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{broken\n")
  docs = load_documents(str(tmp_path / "rows.jsonl"), "train", val_fraction=0.0,
                        cache_dir=tmp_path / "cache")
  assert list(docs) == ["kept", "kept too"]
  assert (docs.stats.documents, docs.stats.no_text, docs.stats.empty, docs.stats.malformed) == (
      2, 4, 1, 1)
  assert skipped_note(docs.stats) == (
      "6 documents skipped (1 empty, 1 malformed JSONL, 4 without a string text field)")


def test_document_separator_splits_a_text_file(tmp_path):
  source = tmp_path / "input.txt"
  source.write_text("first <|endoftext|>second, two lines\n\n<|endoftext|><|endoftext|> \n"
                    "<|endoftext|>third")
  load = lambda separator: list(load_documents(
      str(source), "train", val_fraction=0.0, document_separator=separator,
      cache_dir=tmp_path / "cache"))
  assert load("<|endoftext|>") == ["first ", "second, two lines\n\n", "third"]
  assert load("\n\n") == ["first <|endoftext|>second, two lines",
                          "<|endoftext|><|endoftext|> \n<|endoftext|>third"]
  assert load("") == [source.read_text()]  # the default: one file, one document


def test_a_one_document_source_is_cut_for_validation_with_a_note(tmp_path, capsys):
  source = tmp_path / "input.txt"
  source.write_text(_PLAY)
  cache = tmp_path / "cache"
  train = load_documents(str(source), "train", val_fraction=0.02, cache_dir=cache)
  note = [l for l in capsys.readouterr().out.splitlines() if "its one document" in l]
  val = load_documents(str(source), "validation", val_fraction=0.02, cache_dir=cache)
  assert len(val) >= 1 and len(train) >= 50
  assert "".join(sorted(list(train) + list(val), key=_PLAY.index)) == _PLAY  # cut, not changed
  assert all(piece.endswith("\n") for piece in list(train) + list(val))  # at line breaks
  assert note == [f"data source {source}: its one document is cut at line breaks into "
                  f"{len(train) + len(val)} pieces, {len(val)} of them held out for validation "
                  "(data.document_separator splits a file at its own document boundaries)"]


def test_a_separated_file_among_other_files_trains_with_one_warning_line(tmp_path, capsys):
  """The nanoGPT case with data.document_separator, in a folder with files that are no text."""
  data = tmp_path / "data"
  data.mkdir()
  (data / "input.txt").write_text("\n\n".join(_PLAY.splitlines()))
  _junk(data)
  config = tiny_config()
  config.data.source = str(data)
  config.data.document_separator = "\n\n"
  config.data.val_fraction = 0.05
  config.train.steps = 2  # the compiled step of tests/test_bad_input.py
  final = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert final["step"] == 2
  captured = capsys.readouterr()
  assert "data: indexed 400 documents" in captured.out and "its one document" not in captured.out
  assert captured.err.splitlines() == [
      f"birdie_jax: warning: data source {data}: 4 files skipped (2 not a known text format: "
      "corpus.tar.gz, weights.bin; 1 binary (NUL bytes): zeros.txt; 1 a JSON array, not JSON "
      "lines: rows.json)"]
