"""Every task's generator: the format, an oracle that reads the input scores 100%, a random guesser
scores near the task's computed chance level, examples fit the context, seeds reproduce them."""
import re

import numpy as np
import pytest

from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer, train_sentencepiece
from birdie_jax.evals import passage_qa, phonebook, resources, story_infilling, synthetic, tasks
from birdie_jax.evals.task import Example, TargetScores, TaskContext

SEQ_LEN = 512


@pytest.fixture(scope="module", params=["bytes", "sentencepiece"])
def ctx(request, tmp_path_factory):
  """The generators' context for the byte tokenizer and a small BPE model (digits split)."""
  if request.param == "bytes":
    return TaskContext(ByteTokenizer(), SEQ_LEN)
  docs = load_documents("embedded", "train", val_fraction=0.02)
  tokenizer = train_sentencepiece(docs, vocab_size=1024, cache_dir=tmp_path_factory.mktemp("spm"),
                                  sample_chars=300_000)
  return TaskContext(tokenizer, SEQ_LEN)


def _same(a, b):
  return np.array_equal(a.prompt, b.prompt) and np.array_equal(a.target, b.target)


def _examples(task, count, seed=0):
  return [(d, e) for d in task.sweep for e in task.examples(seed, d, count)]


def _scores(task, pairs):
  """Mean of each metric over (example, output) pairs."""
  scores = [task.score(e, o) for e, o in pairs]
  return {m: float(np.mean([s[m] for s in scores])) for m in scores[0]}


def _teacher_forced(predictions):
  return TargetScores(losses=np.zeros(len(predictions)), predictions=np.asarray(predictions))


@pytest.mark.parametrize("name", tasks.NAMES)
def test_examples_fit_the_context_and_reproduce(ctx, name):
  task = tasks.TASKS[name](ctx)
  assert task.sweep and set(task.sweep) <= set(task.candidates)
  for _, e in _examples(task, 3):
    for target in (e.choices or (e.target,)):
      assert len(e.prompt) + len(target) <= ctx.room
      assert len(target) >= 1
  d = task.sweep[-1]
  first, again, other = (task.examples(s, d, 2) for s in (5, 5, 6))
  assert all(_same(a, b) for a, b in zip(first, again))
  assert not any(_same(a, b) for a, b in zip(first, other))
  train = task.training_examples(5, 0, 2)
  assert not any(_same(t, e) for t in train for e in first)


def _phonebook_oracle(ctx, example):
  text = ctx.tokenizer.decode(example.prompt)
  book = dict(re.findall(r"^(.+): (\d{3}-\d{3}-\d{4})$", text, re.MULTILINE))
  question = text.strip().splitlines()[-1]
  names = re.match(r"What (?:is the phone number|are the phone numbers) for (.+)\? Find",
                   question).group(1)
  asked = re.split(r", and |, | and ", names)
  return ctx.encode(", ".join(book[n] for n in asked) + "\n")


def test_phonebook_format_oracle_and_guesser(ctx):
  task = tasks.TASKS["phonebook"](ctx)
  pairs = _examples(task, 4)
  for d, e in pairs:
    text = ctx.tokenizer.decode(e.prompt)
    lines = text.splitlines()
    assert lines[0].endswith("Find them in the phonebook below." if d > 1 else
                             "Find it in the phonebook below.")
    assert lines[1] == "Phonebook:" and lines[-1].endswith("in the phonebook above.")
    assert lines[0].replace("below", "above") == lines[-1]
    entries = lines[2:-1]
    assert len(entries) >= d and len({line.split(":")[0] for line in entries}) == len(entries)
    assert ctx.tokenizer.decode(e.target) == phonebook.answer_text(e.answers)
    assert all(re.fullmatch(r"[6-9]\d{2}-\d{3}-\d{4}", n) for n in e.answers)
  # Books fill the context: at most one more entry would fit.
  assert all(len(e.prompt) + len(e.target) > ctx.room - 40 for _, e in pairs)
  oracle = _scores(task, [(e, _phonebook_oracle(ctx, e)) for _, e in pairs])
  assert oracle == {"digit_accuracy": 1.0, "exact_match": 1.0}
  rng = np.random.default_rng(0)
  guesses = [(e, ctx.encode(", ".join(
      "".join(map(str, rng.integers(0, 10, 10))) for _ in e.answers) + "\n")) for _, e in pairs]
  guessed = _scores(task, guesses)
  assert abs(guessed["digit_accuracy"] - task.chance(1)) < 0.04
  assert guessed["exact_match"] == 0.0


def test_mqar_format_oracle_and_guesser(ctx):
  task = tasks.TASKS["mqar"](ctx)
  assert not set(task.keys.tolist()) & set(task.values.tolist())
  pairs = _examples(task, 6)
  oracle, guesses = [], []
  rng = np.random.default_rng(0)
  for d, e in pairs:
    keys, values = e.prompt[0::2], e.prompt[1::2]
    assert len(keys) == d and len(set(keys.tolist())) == d
    assert set(keys.tolist()) <= set(task.keys.tolist())
    assert set(values.tolist()) <= set(task.values.tolist())
    length = dict((kv, n) for n, kv in (
        (64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256)))[d]
    assert len(e.prompt) + len(e.target) == length  # Zoology's input_seq_len
    where = np.flatnonzero(e.scored)
    assert len(where) == d and set(e.target[where - 1].tolist()) == set(keys.tolist())
    assert set(keys.tolist()).isdisjoint(np.delete(e.target, where - 1).tolist())
    kv = dict(zip(keys.tolist(), values.tolist()))
    predicted = np.zeros(len(e.target), np.int32)
    predicted[where] = [kv[k] for k in e.target[where - 1].tolist()]
    oracle.append((e, _teacher_forced(predicted)))
    guesses.append((e, _teacher_forced(rng.choice(task.values, len(e.target)))))
  assert _scores(task, oracle) == {"accuracy": 1.0, "exact_match": 1.0}
  assert abs(_scores(task, guesses)["accuracy"] - task.chance(4)) < 0.03


def test_mqar_filler_is_the_vocabulary_without_the_keys(ctx):
  """The fast filler equals np.setdiff1d (so examples are those the plain definition draws)."""
  task = tasks.TASKS["mqar"](ctx)
  rng = np.random.default_rng(1)
  for count in (1, 7, len(task.keys)):
    keys = rng.choice(task.keys, count, replace=False)
    np.testing.assert_array_equal(task.filler(keys), np.setdiff1d(task.vocabulary, keys))


def test_mqar_gaps_follow_the_power_law():
  """power_a = 0.01: short gaps dominate (Zoology's distribution, normalised)."""
  from birdie_jax.evals.mqar import gap_probabilities  # pylint: disable=import-outside-toplevel
  p = gap_probabilities(28)
  assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) < 0)
  assert p[0] / p[1] == pytest.approx(2 ** 0.99)


def test_copying_selective_copying_induction_oracles_and_guessers(ctx):
  rng = np.random.default_rng(1)
  sep = len(ctx.separator)
  copy = tasks.TASKS["copying"](ctx)
  pairs = _examples(copy, 4)
  for d, e in pairs:
    assert len(e.target) == d and np.array_equal(e.prompt[-sep:], ctx.separator)
  assert _scores(copy, [(e, e.prompt[:-sep]) for _, e in pairs])["exact_match"] == 1.0
  guessed = _scores(copy, [(e, rng.choice(ctx.alphabet, len(e.target))) for _, e in pairs])
  assert guessed["accuracy"] < 5 * copy.chance(16)

  selective = tasks.TASKS["selective_copying"](ctx)
  pairs = _examples(selective, 20)
  oracle, guesses = [], []
  for d, e in pairs:
    sequence = e.prompt[:-sep]
    assert len(sequence) == d and len(e.target) == synthetic.TOKENS_TO_COPY
    noise = np.bincount(sequence).argmax()
    oracle.append((e, _teacher_forced(sequence[sequence != noise])))
    guesses.append((e, _teacher_forced(rng.choice(ctx.alphabet[1:15], len(e.target)))))
  assert _scores(selective, oracle)["exact_match"] == 1.0
  assert abs(_scores(selective, guesses)["accuracy"] - selective.chance(64)) < 0.03

  induction = tasks.TASKS["induction"](ctx)
  pairs = _examples(induction, 100)
  oracle, guesses = [], []
  for d, e in pairs:
    trigger = e.prompt[-1]
    first = int(np.flatnonzero(e.prompt == trigger)[0])
    assert len(e.prompt) == d and np.count_nonzero(e.prompt == trigger) == 2
    oracle.append((e, _teacher_forced(e.prompt[first + 1:first + 2])))
    guesses.append((e, _teacher_forced(rng.choice(ctx.alphabet[:16], 1))))
  assert _scores(induction, oracle)["accuracy"] == 1.0
  assert abs(_scores(induction, guesses)["accuracy"] - induction.chance(64)) < 0.04


def _asked(question):
  """(attribute, person) of a passage_qa question."""
  for attribute, (_, _, ask) in passage_qa.ATTRIBUTES.items():
    found = re.fullmatch(re.escape(ask).replace(re.escape("{name}"), "(.+)"), question)
    if found:
      return attribute, found.group(1)
  raise AssertionError(f"no template matches {question!r}")


def _qa_oracle(ctx, example):
  text = ctx.tokenizer.decode(example.prompt)
  attribute, person = _asked(text.strip().splitlines()[-1])
  statement = re.escape(passage_qa.ATTRIBUTES[attribute][1]).replace(re.escape("{name}"),
                                                                       re.escape(person))
  statement = statement.replace(re.escape("{value}"), "(\\w+)").replace("\\ a\\ ", "\\ an?\\ ")
  return ctx.encode(re.search(statement, text).group(1) + "\n")


def test_passage_qa_format_oracle_and_guesser(ctx):
  task = tasks.TASKS["passage_qa"](ctx)
  pairs = _examples(task, 60)
  oracle, guesses = [], []
  rng = np.random.default_rng(2)
  for d, e in pairs:
    text = ctx.tokenizer.decode(e.prompt)
    context, question = text.rsplit("\n\n", 1)
    assert len(e.prompt) <= d and question.endswith("?\n") and context
    assert ctx.tokenizer.decode(e.target) == e.answers[0] + "\n"
    oracle.append((e, _qa_oracle(ctx, e)))
    values = passage_qa.ATTRIBUTES[_asked(question.strip())[0]][0]
    guesses += [(e, ctx.encode(values[rng.integers(len(values))] + "\n")) for _ in range(20)]
  assert _scores(task, oracle) == {"contains": 1.0, "f1": 1.0}
  assert abs(_scores(task, guesses)["contains"] - task.chance(128)) < 0.012


def test_story_infilling_answer_is_the_blanked_sentence(ctx):
  task = tasks.TASKS["story_infilling"](ctx)
  pairs = _examples(task, 10)
  sentences = resources.passage_sentences()
  labels = []
  for d, e in pairs:
    text = ctx.tokenizer.decode(e.prompt)
    assert text.startswith(story_infilling.HEADER) and text.endswith(story_infilling.FOOTER)
    story = re.findall(r"^\d\. (.+)$", text, re.MULTILINE)
    choices = re.findall(r"^[ABCD]\. (.+)$", text, re.MULTILINE)
    assert len(story) == d and story.count(story_infilling.BLANK) == 1
    assert [ctx.tokenizer.decode(c) for c in e.choices] == choices
    assert choices[e.label] == e.answers[0] and len(set(choices)) == 4
    filled = [e.answers[0] if s == story_infilling.BLANK else s for s in story]
    assert any(list(p[i:i + d]) == filled for p in sentences for i in range(len(p) - d + 1))
    labels.append(e.label)
  # Scored by loss per token: the right choice with the lowest mean loss wins, whatever its length.
  d, e = pairs[0]
  losses = [TargetScores(np.full(len(c), 1.0 if i == e.label else 2.0), np.zeros(len(c)))
            for i, c in enumerate(e.choices)]
  assert task.score(e, losses) == {"accuracy": 1.0}
  rng = np.random.default_rng(3)
  guesses = [(e, [TargetScores(rng.random(len(c)), np.zeros(len(c))) for c in e.choices])
             for _, e in pairs for _ in range(20)]
  assert abs(_scores(task, guesses)["accuracy"] - task.chance(3)) < 0.08
  assert len(set(labels)) > 1


def test_perplexity_windows_and_reference_scores(ctx):
  task = tasks.TASKS["perplexity"](ctx)
  pairs = _examples(task, 2)
  stream = ctx.prose_ids
  for d, e in pairs:
    assert len(e.prompt) == 0 and len(e.target) == d
    starts = np.flatnonzero(stream[:len(stream) - d + 1] == e.target[0])
    assert any(np.array_equal(stream[s:s + d], e.target) for s in starts)
  d, e = pairs[0]
  vocab = ctx.tokenizer.vocab_size
  uniform = task.score(e, TargetScores(np.full(d, np.log(vocab)), np.zeros(d)))
  assert task.summarize(uniform)["perplexity"] == pytest.approx(task.chance(d))
  perfect = task.score(e, TargetScores(np.zeros(d), e.target))
  assert task.summarize(perfect) == {"perplexity": 1.0, "loss": 0.0}


def test_alphabet_is_the_prose_tokens_without_the_separator(ctx):
  alphabet = ctx.alphabet
  assert len(set(alphabet.tolist())) == len(alphabet) > 32
  assert not set(ctx.separator.tolist()) & set(alphabet.tolist())
  counts = np.bincount(ctx.prose_ids, minlength=ctx.tokenizer.vocab_size)[alphabet]
  assert np.all(np.diff(counts) <= 0)


def test_training_examples_draw_from_the_given_difficulties(ctx):
  task = tasks.TASKS["phonebook"](ctx)
  examples = task.training_examples(0, 0, 6, difficulties=[1, 2])
  assert {len(e.answers) for e in examples} <= {1, 2}
  assert isinstance(examples[0], Example)
