"""Weighted data-source mixtures (data.sources): rows drawn in proportion to the weights, each
source with its own disjoint split, per-source token counts that add up, exact resume (iterator
state, the read-ahead, Orbax, the training loop's own checkpoints), one-line config errors, and the
single-source pipeline unchanged."""
import functools
import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy import stats

import grain
from birdie_jax.config import default_config
from birdie_jax.config import validate_config
from birdie_jax.data import special_tokens
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.documents import Documents
from birdie_jax.data.documents import SourceStats
from birdie_jax.data.documents import split_indices
from birdie_jax.data.lookahead import Lookahead
from birdie_jax.data.mix_dataset import source_tokens
from birdie_jax.data.pack_dataset import PackIterDataset
from birdie_jax.data.pack_dataset import planner_states
from birdie_jax.data.packing import DocumentPacker
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.pipeline import set_mixture_weights
from birdie_jax.data.pipeline import without_mixture_weights
from birdie_jax.data.source_mixture import MixtureDocuments
from birdie_jax.data.source_mixture import parse_sources
from birdie_jax.data.sources import load_documents
from birdie_jax.data.sources import run_documents
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.objectives.mixture import state_weights
from birdie_jax.train import loop
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

# Unoptimised compiles (models_helpers.fast_compile): these tests check what the code
# computes, not how fast, and compiling dominates them on 2 cores.
pytestmark = pytest.mark.usefixtures("fast_compile")

SEQ_LEN, BATCH = 32, 4
TOKENIZER = ByteTokenizer()


def _texts(char: str, n: int, seed: int) -> list[str]:
  """Documents of one repeated character (the row's source shows in its tokens), 1-3 rows long."""
  rng = np.random.default_rng(seed)
  return [char * int(rng.integers(5, 3 * SEQ_LEN)) for _ in range(n)]


def _mixture(weights: dict[str, float], n: int = 30) -> MixtureDocuments:
  specs = parse_sources(",".join(f"{name}={w}:{name}" for name, w in weights.items()),
                        val_fraction=0.1, text_field="text")
  parts = {}
  for k, name in enumerate(weights):
    texts = _texts(name, n + 10 * k, k)
    parts[name] = Documents(texts, range(len(texts)), SourceStats(documents=len(texts)))
  return MixtureDocuments(parts, specs)


WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}
DOCS = _mixture(WEIGHTS)


def _dataset(docs=DOCS, seed=0, **kwargs):
  return make_train_dataset(docs, TOKENIZER, seq_len=SEQ_LEN, batch_size=BATCH, seed=seed,
                            **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _equal(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _row_sources(batch) -> list[str]:
  """The source of each row: the one character its example tokens spell."""
  out = []
  for targets, seg in zip(batch["targets"], batch["segment_ids"]):
    chars = set(TOKENIZER.decode(targets[seg > 0].tolist()))
    assert len(chars) == 1, chars  # a row never mixes sources
    out.append(chars.pop())
  return out


@functools.cache
def _drawn(batches: int = 120) -> tuple[list, dict]:
  """`batches` batches of the module's mixture, and the iterator state after them."""
  iterator = iter(_dataset())
  drawn = _take(iterator, batches)
  state = iterator.get_state()
  iterator.close()
  return drawn, state


def _binomial_ok(count: int, n: int, p: float) -> bool:
  low, high = stats.binom.interval(0.9999, n, p)
  return low <= count <= high


def test_rows_are_drawn_in_proportion_to_the_weights():
  batches, _ = _drawn()
  rows = [s for b in batches for s in _row_sources(b)]
  for name, weight in WEIGHTS.items():
    assert _binomial_ok(rows.count(name), len(rows), weight), (name, rows.count(name), len(rows))
  assert "d" not in rows  # weight 0: validation only
  # The interleaved view (the tokenizer's sample, the controller's sets) follows the weights too.
  view = [DOCS[i][0] for i in range(len(DOCS))]
  for name, weight in WEIGHTS.items():
    assert _binomial_ok(view.count(name), len(view), weight)
  assert isinstance(DOCS[1::2], Documents) and [d[0] for d in DOCS[1::2]] == view[1::2]


def test_per_source_token_counts_add_up_to_the_rows_drawn():
  batches, state = _drawn()
  expected = dict.fromkeys(WEIGHTS, 0)
  for batch in batches:
    for source, seg in zip(_row_sources(batch), batch["segment_ids"]):
      expected[source] += int(np.count_nonzero(seg))
  assert source_tokens(state) == expected
  assert sum(expected.values()) == sum(int(np.count_nonzero(b["segment_ids"])) for b in batches)


@pytest.mark.parametrize("k", [1, 7])
def test_resume_gives_the_batches_of_an_uninterrupted_run(k):
  """The state taken behind a read-ahead batch restores into a fresh pipeline exactly."""
  uninterrupted = iter(_dataset(gap=1))
  expected = _take(uninterrupted, k + 6)
  uninterrupted.close()
  first = Lookahead(iter(_dataset(gap=1)))
  assert _equal(_take(first, k), expected[:k])
  first.prefetch()  # the batch after k is read ahead; the state is still the one before it
  state = first.get_state()
  first.close()
  resumed = iter(_dataset(gap=1))
  resumed.set_state(state)
  assert _equal(_take(resumed, 6), expected[k:])
  resumed.close()


def test_orbax_round_trip_with_objective_weights_saved_elsewhere(tmp_path):
  """As the trainer checkpoints with a controller: the data item without the objective weights,
  which a restore then sets on every source's planner."""
  mixture = make_mixture(TOKENIZER, curriculum="birdie", seq_len=64)
  build = functools.partial(make_train_dataset, DOCS, TOKENIZER, seq_len=64, batch_size=2, seed=4,
                            make_example=mixture)
  iterator = iter(build())
  _take(iterator, 3)
  new = np.random.default_rng(0).dirichlet(np.ones(len(mixture.names)))
  set_mixture_weights(iterator, new)
  assert len(planner_states(iterator.get_state())) == len(WEIGHTS)  # one per source
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointSave(without_mixture_weights(iterator))))
  manager.wait_until_finished()
  expected = _take(iterator, 4)
  restored = iter(build())
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  set_mixture_weights(restored, new)
  assert all(np.allclose(state_weights(p), new) for p in planner_states(restored.get_state()))
  assert _equal(_take(restored, 4), expected)
  manager.close()
  iterator.close()
  restored.close()


def test_a_changed_source_list_keeps_the_positions_of_the_sources_it_keeps(capsys):
  """resume.allow=data.sources: kept sources continue, a new one starts at its beginning."""
  two = _mixture({"a": 0.5, "b": 0.5})
  iterator = iter(_dataset(two))
  _take(iterator, 5)
  state = iterator.get_state()
  iterator.close()
  other = _mixture({"a": 0.5, "c": 0.5})
  resumed = iter(_dataset(other))
  resumed.set_state(state)
  after = [s for b in _take(resumed, 5) for s in _row_sources(b)]
  assert "b" not in after and "a" in after and "c" in after
  assert source_tokens(resumed.get_state())["a"] > source_tokens(state)["a"]
  assert "c start(s) at the beginning; b dropped" in capsys.readouterr().out
  resumed.close()
  single = iter(make_train_dataset(list(two.parts["a"]), TOKENIZER, seq_len=SEQ_LEN,
                                   batch_size=BATCH, seed=0))
  mixed = iter(_dataset(two))
  with pytest.raises(ConfigError, match="one data source"):
    mixed.set_state(single.get_state())
  with pytest.raises(ConfigError, match="not of one data source"):  # and the other way round
    single.set_state(mixed.get_state())
  single.close()
  mixed.close()


def test_each_source_has_its_own_disjoint_split(tmp_path):
  (tmp_path / "a").mkdir()
  for i in range(30):
    (tmp_path / "a" / f"{i:02d}.txt").write_text(f"text file {i}")
  rows = tmp_path / "b.jsonl"
  rows.write_text("".join(json.dumps({"body": f"json line {i}"}) + "\n" for i in range(50)))
  config = default_config()
  config.data.sources = f"a=0.4:{tmp_path / 'a'},b=0.6:{rows}"
  config.data.source_options = "b.val_fraction=0.3,b.text_field=body"
  config.data.val_fraction = 0.1
  validate_config(config)
  cache = tmp_path / "cache"
  train, val = (run_documents(config.data, split, cache_dir=cache)
                for split in ("train", "validation"))
  for name, n, fraction in (("a", 30, 0.1), ("b", 50, 0.3)):
    kept, held = set(train.parts[name]), set(val.parts[name])
    assert not kept & held and len(kept | held) == n
    assert len(held) == len(split_indices(n, "validation", fraction))
  assert train.weights == {"a": 0.4, "b": 0.6} and train.stats.documents == 80


BAD = [
    ("a=-0.2:x,b=1.2:y", "weight of a is negative"),
    ("a=0.5:x,a=0.5:y", "names a twice"),
    ("a=0.5:x,b=0.4:y", "weights sum to 0.9, not 1"),
    ("a=0.5:x,b=0.50001:y", "weights sum to 1.00001, not 1"),
    ("a=half:x,b=0.5:y", "weight of a must be a number"),
    ("1a=1:x", "source name '1a'"),
    ("a=1", "is not name=weight:source"),
    ("a=0.5:x,,b=0.5:y", "empty entry"),
]


@pytest.mark.parametrize("sources,message", BAD)
def test_bad_sources_are_one_config_error_line(sources, message):
  config = default_config()
  config.data.sources = sources
  with pytest.raises(ConfigError, match=message) as error:
    validate_config(config)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("options,message", [
    ("c.val_fraction=0.1", "names source 'c', which is not in data.sources"),
    ("a.weight=0.1", "unknown option 'weight'"),
    ("a.val_fraction=1.5", r"a.val_fraction must be in \(0, 1\)"),
    ("a.val_fraction=0.1,a.val_fraction=0.2", "twice"),
])
def test_bad_source_options_are_one_config_error_line(options, message):
  config = default_config()
  config.data.sources = "a=0.5:x,b=0.5:y"
  config.data.source_options = options
  with pytest.raises(ConfigError, match=message) as error:
    validate_config(config)
  assert "\n" not in str(error.value)


def test_sources_syntax():
  a, b = parse_sources(" a=0.5000001:/data/x,y/*.jsonl.zst,\n b=0.5:tfds:wiki/en:1.0.0", "",
                       val_fraction=0.02, text_field="text")
  assert (a.name, a.weight, a.source) == ("a", 0.5000001, "/data/x,y/*.jsonl.zst")
  assert (b.name, b.source) == ("b", "tfds:wiki/en:1.0.0")  # within 1e-6 of 1
  config = default_config()
  config.data.sources = "a=1:embedded"
  config.data.source = "/somewhere"
  with pytest.raises(ConfigError, match="not both"):
    validate_config(config)


def _old_pipeline(documents, seed):
  """The single-source pipeline as it was before mixtures (the default path must not change)."""
  packer = functools.partial(
      DocumentPacker, SEQ_LEN, begin_id=TOKENIZER.special_id(special_tokens.BEGIN),
      pad_id=TOKENIZER.pad_id, seed=seed,
      gap_id=TOKENIZER.special_id(special_tokens.GAP))
  tokens = (grain.MapDataset.source(documents).shuffle(seed=seed).repeat(None)
            .map_with_index(lambda i, text: (i, TOKENIZER.encode(text)))
            .to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)))
  return PackIterDataset(tokens, packer).batch(BATCH, drop_remainder=True)


def test_a_single_source_is_read_as_before():
  documents = list(DOCS.parts["b"])
  old, new = iter(_old_pipeline(documents, 3)), iter(_dataset(documents, seed=3))
  assert _equal(_take(old, 8), _take(new, 8)) and old.get_state() == new.get_state()
  old.close()
  new.close()
  config = default_config()
  validate_config(config)
  assert parse_sources(config.data.sources, config.data.source_options, val_fraction=0.02,
                       text_field="text") == ()
  loaded = run_documents(config.data, "validation")
  assert type(loaded) is Documents and list(loaded) == list(
      load_documents("embedded", "validation", val_fraction=config.data.val_fraction))


def test_a_training_run_logs_per_source_tokens_and_losses_and_resumes_exactly(tmp_path, capsys):
  """The real loop, checkpointing every step: a second start from checkpoint 1 trains step 2 on
  the same batch as the first start did (same loss, same counts); the counts logged are those of
  the batches an independent pipeline draws; val_loss is the sources' weighted mean."""
  for name, char in (("a", "x"), ("b", "y")):
    (tmp_path / name).mkdir()
    for i in range(12):
      (tmp_path / name / f"{i}.txt").write_text(char * (40 + 13 * i))
  config = tiny_config()
  config.data.sources = f"a=0.75:{tmp_path / 'a'},b=0.25:{tmp_path / 'b'}"
  config.data.source_options = "b.val_fraction=0.2"
  config.data.val_fraction = 0.2
  config.train.steps = 2  # the compiled step of tests/test_bad_input.py
  config.checkpoint.every_steps = 1
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))
  shutil.rmtree(workdir / "checkpoints" / "2")  # as if stopped after the checkpoint of step 1
  loop.train_and_evaluate(config, str(workdir))
  assert "resumed from step 1" in capsys.readouterr().out
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [row["step"] for row in rows] == [1, 2, 2]
  uninterrupted, resumed = rows[1], rows[2]
  for key in ("loss", "source_tokens/a", "source_tokens/b", "val_loss", "source_val_loss/a",
              "source_val_loss/b"):
    assert resumed[key] == uninterrupted[key], key
  assert resumed["val_loss"] == pytest.approx(
      0.75 * resumed["source_val_loss/a"] + 0.25 * resumed["source_val_loss/b"], rel=1e-12)
  iterator = iter(make_train_dataset(
      run_documents(config.data, "train"), TOKENIZER, seq_len=64, batch_size=8, seed=config.seed,
      make_example=make_mixture(TOKENIZER, curriculum="ntp", seq_len=64)))
  counts, of = {"a": 0, "b": 0}, {"x": "a", "y": "b"}
  for row in rows[:2]:
    batch = next(iterator)
    for source, seg in zip(_row_sources(batch), batch["segment_ids"]):
      counts[of[source]] += int(np.count_nonzero(seg))
    assert {name: row[f"source_tokens/{name}"] for name in counts} == counts
  assert counts["a"] and counts["b"]
  iterator.close()
