"""Large sources' split indices: cached on disk, memory-mapped, pickled as a path."""
import pickle

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from birdie_jax.data import split_cache
from birdie_jax.data.documents import split_indices
from birdie_jax.data.sources import load_documents


@pytest.fixture
def mapped_from_zero(monkeypatch):
  monkeypatch.setattr(split_cache, "MAPPED_FROM", 0)


@pytest.mark.usefixtures("mapped_from_zero")
def test_mapped_split_equals_the_array_pickles_small_and_is_written_once(tmp_path):
  n, fraction = 50_000, 0.05
  for split in ("train", "validation"):
    mapped = split_cache.split_index(n, split, fraction, tmp_path)
    assert isinstance(mapped, split_cache.MappedIndices)
    expected = split_indices(n, split, fraction)
    np.testing.assert_array_equal([mapped[i] for i in range(len(mapped))], expected)
    assert mapped[-1] == expected[-1]
    with pytest.raises(IndexError):
      mapped[len(expected)]  # pylint: disable=pointless-statement
    assert len(pickle.dumps(mapped)) < 500 < expected.nbytes
    shard = pickle.loads(pickle.dumps(mapped[1::3]))
    np.testing.assert_array_equal(list(shard), expected[1::3])
  files = sorted(tmp_path.iterdir())
  assert [f.suffix for f in files] == [".npy", ".npy"]  # nothing temporary left
  stamps = [f.stat().st_mtime_ns for f in files]
  split_cache.split_index(n, "train", fraction, tmp_path)
  assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not written again


@pytest.mark.usefixtures("mapped_from_zero")
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), slices=st.lists(
    st.tuples(st.integers(-40, 40) | st.none(), st.integers(-40, 40) | st.none(),
              st.sampled_from([None, 1, 2, 3, -1, -2])), max_size=3))
def test_slices_of_mapped_indices_are_slices_of_the_array(tmp_path_factory, n, slices):
  folder = tmp_path_factory.getbasetemp() / "split_property"
  mapped = split_cache.split_index(n, "train", 0.1, folder)
  expected = split_indices(n, "train", 0.1)
  for start, stop, step in slices:
    mapped, expected = mapped[start:stop:step], expected[start:stop:step]
  assert len(mapped) == len(expected)
  np.testing.assert_array_equal(list(pickle.loads(pickle.dumps(mapped))), expected)


def test_small_sources_and_unwritable_folders_keep_an_array(tmp_path, monkeypatch, capsys):
  small = split_cache.split_index(1000, "train", 0.1, tmp_path)
  assert isinstance(small, np.ndarray) and not any(tmp_path.iterdir())
  blocked = tmp_path / "file"
  blocked.write_text("a file where the folder would be")
  monkeypatch.setattr(split_cache, "MAPPED_FROM", 0)
  kept = split_cache.split_index(1000, "train", 0.1, blocked / "cache")
  assert isinstance(kept, np.ndarray)
  np.testing.assert_array_equal(kept, small)
  warning = "birdie_jax: warning: keeping the train split's indices in memory"
  assert warning in capsys.readouterr().err


@pytest.mark.usefixtures("mapped_from_zero")
def test_documents_of_a_file_source_pickle_without_their_indices(tmp_path):
  data = tmp_path / "data.jsonl"
  data.write_text("".join(f'{{"text": "document {i}"}}\n' for i in range(20_000)))
  cache = tmp_path / "cache"
  val = load_documents(str(data), "validation", val_fraction=0.1, cache_dir=cache)
  shard = pickle.loads(pickle.dumps(val[1::2]))
  held_out = split_indices(20_000, "validation", 0.1)
  assert list(shard) == [f"document {i}" for i in held_out[1::2]]
  assert len(pickle.dumps(val)) < 2_000
  assert any(p.name.startswith("split-") for p in cache.iterdir())
