"""Instruction tuning's data: records and their one-line errors, the chat template, the reply-only
loss mask in both layouts, packing with resets, resumable batches, and what a model reads of the
rows (Birdie's bidirectional prompt, causal replies, packed examples independent)."""
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from birdie_jax.data import special_tokens
from birdie_jax.data.instructions import tiny_instructions, write_jsonl
from birdie_jax.data.sft_records import encode, read_records, to_conversation
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals.layout import Layout
from birdie_jax.models import build_model
from birdie_jax.train.sft_data import SFTData, plan_rows, split
from models_helpers import fast_compile, tiny_model_config  # noqa: F401  (fixture)

TOKENIZER = ByteTokenizer()
EOS = TOKENIZER.special_id(special_tokens.EOS)
BEGIN = TOKENIZER.special_id(special_tokens.BEGIN)
PARADIGM = TOKENIZER.special_id(special_tokens.PARADIGMS["prefix_lm"])
CHAT = [("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello."),
        ("user", "Again"), ("assistant", "Hello!")]


def _layout(kind: str) -> Layout:
  return Layout(kind, begin_id=BEGIN, pad_id=TOKENIZER.pad_id)


def _data(conversations, kind: str, seq_len: int = 128, paradigm: int | None = None) -> SFTData:
  return SFTData.build(conversations, TOKENIZER, _layout(kind), paradigm, seq_len=seq_len,
                       val_fraction=0.25, seed=0)


def _ids(text: str) -> list[int]:
  return TOKENIZER.encode(text).tolist()


def test_template_renders_the_documented_text_and_targets():
  example = encode(CHAT, TOKENIZER)
  assert example.prompt.tolist() == _ids("System: Be brief.\n") + _ids("User: Hi there\n") + _ids(
      "Assistant: ")
  replies = [_ids("Hello.") + [EOS], _ids("User: Again\n") + _ids("Assistant: "),
             _ids("Hello!") + [EOS]]
  assert example.target.tolist() == [t for part in replies for t in part]
  assert example.scored.tolist() == [1.0] * len(replies[0]) + [0.0] * len(replies[1]) + [
      1.0] * len(replies[2])
  # A prompt/response record is the conversation [user, assistant].
  pair = to_conversation({"prompt": "Hi there", "response": "Hello."})
  assert pair == [("user", "Hi there"), ("assistant", "Hello.")]


@pytest.mark.parametrize("kind", ["prefix", "continuation"])
def test_loss_is_on_reply_tokens_only(kind):
  conversations = [CHAT, [("user", "Say yes"), ("assistant", "Yes")]] * 2
  paradigm = PARADIGM if kind == "prefix" else None
  data = _data(conversations, kind, paradigm=paradigm)
  for index, conversation in enumerate(conversations):
    seg = data.segment(index)
    example = encode(conversation, TOKENIZER)
    scored = seg["loss_mask"] > 0
    # The trained-on targets are exactly the replies and their <eos>, in order.
    replies = [_ids(c) + [EOS] for role, c in conversation if role == "assistant"]
    assert seg["targets"][scored].tolist() == [t for r in replies for t in r]
    np.testing.assert_array_equal(seg["loss_mask"][scored], 1.0)
    # The prompt never is: it sits in the inputs, before <begin> (prefix) or after it.
    n = len(example.prompt)
    if kind == "prefix":
      assert seg["inputs"][:n + 2].tolist() == [PARADIGM, *example.prompt, BEGIN]
      assert seg["prefix_mask"].tolist() == [True] * (n + 1) + [False] * (len(seg["inputs"]) - n
                                                                           - 1)
      assert not scored[:n + 1].any()
    else:
      assert seg["inputs"][:n + 1].tolist() == [BEGIN, *example.prompt]
      assert not seg["prefix_mask"].any() and not scored[:n].any()
    # Each input predicts the next target: the reply is teacher-forced.
    start = len(seg["inputs"]) - len(example.target)
    assert seg["inputs"][start + 1:].tolist() == example.target[:-1].tolist()


def test_split_and_rows():
  train, val = split(50, 0.1, seed=3)
  assert len(val) == 5 and sorted([*train, *val]) == list(range(50))
  assert len(split(3, 0.01, seed=0)[1]) == 1  # at least one validation record
  with pytest.raises(ConfigError, match="at least 2 records"):
    split(1, 0.5, seed=0)
  lengths = [5, 7, 3, 10, 1, 9, 4]
  rows = plan_rows(lengths, 12)
  assert [i for row in rows for i in row] == list(range(len(lengths)))  # order kept
  assert all(sum(lengths[i] for i in row) <= 12 for row in rows)
  # Next-fit: a row closes only when the next example does not fit it.
  assert all(sum(lengths[i] for i in a) + lengths[b[0]] > 12 for a, b in zip(rows, rows[1:]))


def test_packed_rows_restart_segments_and_positions():
  data = _data(tiny_conversations(40), "prefix", seq_len=256, paradigm=PARADIGM)
  indices = list(data.train[:6])
  for row_indices in data.rows(indices):
    row = data.pack(row_indices)
    start = 0
    for s, index in enumerate(row_indices, 1):
      seg = data.segment(index)
      end = start + len(seg["inputs"])
      for key in seg:
        np.testing.assert_array_equal(row[key][start:end], seg[key])
      np.testing.assert_array_equal(row["segment_ids"][start:end], s)
      np.testing.assert_array_equal(row["positions"][start:end], np.arange(end - start))
      start = end
    assert not row["segment_ids"][start:].any() and not row["loss_mask"][start:].any()


@functools.cache
def tiny_conversations(count: int):
  return [to_conversation(r) for r in tiny_instructions(count, seed=1)]


def test_training_batches_resume_exactly_and_visit_every_row_each_epoch():
  data = _data(tiny_conversations(60), "continuation", seq_len=256)
  rows = data.rows(data.train[np.random.default_rng([0, 1]).permutation(len(data.train))])
  planned = sorted(data.pack(r)["inputs"].tobytes() for r in rows)
  iterator = iter(data.train_dataset(batch_size=1, seed=0))
  for _ in range(2):  # each epoch visits every planned row once, in a new order
    epoch = [next(iterator)["inputs"][0].tobytes() for _ in rows]
    assert sorted(epoch) == planned
  state = iterator.get_state()
  after = [next(iterator) for _ in range(3)]
  resumed = iter(data.train_dataset(batch_size=1, seed=0))
  resumed.set_state(state)
  for a, b in zip(after, [next(resumed) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Two processes read disjoint rows: together, the rows of one process.
  halves = [[b["inputs"][0].tobytes() for b, _ in zip(iter(data.train_dataset(
      batch_size=1, seed=0, process_index=p, process_count=2)), range(len(rows) // 2))]
            for p in range(2)]
  assert not set(halves[0]) & set(halves[1])
  assert set(halves[0]) | set(halves[1]) <= set(planned)


def test_validation_batches_hold_the_whole_split_once():
  data = _data(tiny_conversations(60), "prefix", seq_len=256, paradigm=PARADIGM)
  batches = [data.validation_batches(batch_size=2, process_index=p, process_count=2)
             for p in range(2)]
  assert len(batches[0]) == len(batches[1])
  reply_tokens = sum(float(encode(tiny_conversations(60)[i], TOKENIZER).scored.sum())
                     for i in data.val)
  assert sum(float(b["loss_mask"].sum()) for p in batches for b in p) == reply_tokens


def test_examples_longer_than_the_row_are_left_out_with_a_line(capsys):
  conversations = [[("user", "x" * 200), ("assistant", "y")]] + tiny_conversations(20)
  data = _data(conversations, "continuation", seq_len=128)
  lengths = [len(e.prompt) + len(e.target) for e in (encode(c, TOKENIZER) for c in conversations)]
  long = {i for i, n in enumerate(lengths) if n > 128}
  assert 0 in long and not long & {*data.train, *data.val}
  assert len(data.train) + len(data.val) == len(conversations) - len(long)
  assert f"{len(long)} of 21 records are longer than train.seq_len=128" in capsys.readouterr().err
  with pytest.raises(ConfigError, match="no training record fits train.seq_len=8"):
    _data(conversations, "continuation", seq_len=8)


BAD = {
    "missing file": (None, "cannot read the fine-tuning data"),
    "no records": ("\n\n", "holds no records"),
    "not UTF-8": (b"\xff\xfe\n", "line 1: not UTF-8"),
    "not JSON": ('{"prompt": "a", "response": "b"}\n{oops\n', "line 2: not JSON"),
    "not an object": ("[1, 2]\n", "line 1: not a JSON object"),
    "no fields": ('{"text": "a"}\n', "line 1: needs string \"prompt\" and \"response\" (keys: "
                  "'text')"),
    "empty response": ('{"prompt": "a", "response": "  "}\n', "line 1: empty response"),
    "bad role": ('{"messages": [{"role": "bot", "content": "a"}]}\n', "message 1 has role 'bot'"),
    "no reply": ('{"messages": [{"role": "user", "content": "a"}]}\n', "no assistant message"),
    "empty reply": ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", '
                    '"content": ""}]}\n', "message 2 (assistant) is empty"),
    "no content": ('{"messages": [{"role": "user"}]}\n', "message 1 needs a \"role\" and a "
                   "string \"content\""),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records_stop_in_one_line(tmp_path, case):
  content, message = BAD[case]
  path = tmp_path / "data.jsonl"
  if content is not None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(ConfigError) as error:
    read_records(str(path))
  text = str(error.value)
  assert message in text and "\n" not in text and str(path) in text


def test_tiny_instructions_are_fixed_by_their_seed_and_valid(tmp_path):
  records = tiny_instructions(200, seed=0)
  assert records == tiny_instructions(200, seed=0) != tiny_instructions(200, seed=1)
  write_jsonl(records, tmp_path / "tiny.jsonl")
  conversations = read_records(str(tmp_path / "tiny.jsonl"))
  assert len(conversations) == 200
  assert sum(len(c) == 5 for c in conversations) == 20  # every tenth is a two-turn chat
  lengths = [len(e.prompt) + len(e.target) + 1 for e in map(
      functools.partial(encode, tokenizer=TOKENIZER), conversations)]
  assert max(lengths) <= 256  # the documented fit, paradigm token included
  for record in records:
    if "prompt" in record and record["prompt"].startswith("Reverse the word order: "):
      line = record["prompt"].removeprefix("Reverse the word order: ")
      assert record["response"].split() == line.split()[::-1]


# ## What a model reads of the rows (one random tiny Birdie Hawk, compiled once).


@functools.cache
def _forward():
  """A random Birdie Hawk (bidirectional), one compile for rows of 128."""
  model = build_model(tiny_model_config("hawk", True), TOKENIZER.vocab_size, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, b: nnx.merge(graphdef, s)(
      b["inputs"], segment_ids=b["segment_ids"], positions=b["positions"],
      prefix_mask=b["prefix_mask"]))
  # One row per call: CPU kernels may round a row differently by its place in a batch.
  return lambda batch: np.concatenate([np.asarray(fn(state, {k: v[i:i + 1] for k, v in
                                                             batch.items()}))
                                       for i in range(len(batch["inputs"]))])


def _changed(a, b):
  return np.abs(a - b).max(axis=-1) > 1e-6


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("kind", ["prefix", "continuation"])
def test_birdie_reads_the_prompt_both_ways_and_the_reply_causally(kind):
  conversation = [("user", "Repeat: to be or not"), ("assistant", "to be or not")]
  paradigm = PARADIGM if kind == "prefix" else None
  data = _data([conversation] * 4, kind, paradigm=paradigm)
  row = data.pack([0])
  n_prompt = len(encode(conversation, TOKENIZER).prompt) + 1  # with the paradigm or <begin>
  prompt_t = n_prompt - 3  # a late prompt position (inputs index)
  reply_t = n_prompt + 6  # a reply position
  batch = {k: np.repeat(v[None], 3, axis=0) for k, v in row.items()}
  batch["inputs"][1, prompt_t] = _ids("X")[0]
  batch["inputs"][2, reply_t] = _ids("X")[0]
  out = _forward()(batch)
  # A later reply token changes nothing before it.
  np.testing.assert_array_equal(out[2, :reply_t], out[0, :reply_t])
  assert _changed(out[2, reply_t:reply_t + 4], out[0, reply_t:reply_t + 4]).all()
  earlier = _changed(out[1, :prompt_t], out[0, :prompt_t])
  if kind == "prefix":  # the prompt sits in the bidirectional prefix: earlier positions see it
    assert earlier.all()
  else:  # laid out for a next-token run, the same model reads it as causal context
    assert not earlier.any()


@pytest.mark.usefixtures("fast_compile")
def test_an_examples_loss_is_the_same_alone_and_packed():
  short = [[("user", "Say hi"), ("assistant", "hi")], [("user", "Repeat: O brave"), ("assistant", "O brave")],
           [("system", "Be kind."), ("user", "Name?"), ("assistant", "Ariel")]]
  data = _data(short + [CHAT], "prefix", paradigm=PARADIGM)
  row_indices = data.rows(range(3))[0]
  assert len(row_indices) == 3
  packed = data.pack(row_indices)
  alone = [data.pack([i]) for i in row_indices]
  batch = {k: np.stack([packed[k]] + [a[k] for a in alone]) for k in packed}
  logits = _forward()(batch).astype(np.float64)
  top = logits.max(-1, keepdims=True)
  log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  losses = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
  losses *= batch["loss_mask"]
  for s, _ in enumerate(row_indices, 1):
    in_row = losses[0][packed["segment_ids"] == s].sum()
    np.testing.assert_allclose(in_row, losses[s].sum(), rtol=1e-5)
    assert losses[s].sum() > 0
