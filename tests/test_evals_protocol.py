"""The evaluation protocol's copying tasks and teacher-forced metrics: natural-text and frequent-id
copying (oracles score 1, guessers score their chance, seeds reproduce, passages are held-out
prose), and generation tasks' teacher-forced metrics agreeing with greedy decoding on a real model.
"""
import jax
import numpy as np
import pytest

from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer, train_sentencepiece
from birdie_jax.evals import resources, scoring, synthetic, tasks
from birdie_jax.evals import settings as eval_settings
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import Example, GENERATE, TEACHER_FORCED, TaskContext
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.state import init_train_state, make_train_setup
from helpers import tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

NEW_TASKS = ("copying_frequent", "copying_text")


@pytest.fixture(scope="module", params=["bytes", "sentencepiece"])
def ctx(request, tmp_path_factory):
  """The byte tokenizer (75 prose ids) and a 1024-piece BPE model (over 256 prose ids)."""
  if request.param == "bytes":
    return TaskContext(ByteTokenizer(), 512)
  docs = load_documents("embedded", "train", val_fraction=0.02)
  tokenizer = train_sentencepiece(docs, vocab_size=1024, cache_dir=tmp_path_factory.mktemp("spm"),
                                  sample_chars=300_000)
  return TaskContext(tokenizer, 2100)


def _examples(task, count, seed=0):
  return [e for d in task.sweep for e in task.examples(seed, d, count)]


def _mean(dicts):
  return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def _forced(logits, target):
  """(predictions, losses) of teacher-forced `logits` (T, V), in float64 numpy."""
  shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return shifted.argmax(-1), -log_probs[np.arange(len(target)), target]


def test_new_copy_tasks_are_registered_with_teacher_forced_metrics():
  names = tasks.parse_names("copying, copying_text, copying_frequent")
  assert names == ("copying", "copying_text", "copying_frequent")
  assert set(NEW_TASKS) <= set(tasks.NAMES) and tasks.NAMES[:3] == ("phonebook", "mqar", "copying")
  for name in ("copying", *NEW_TASKS):
    task = tasks.TASKS[name](TaskContext(ByteTokenizer(), 128))
    assert task.kind == GENERATE and task.paradigm == "copying"
    assert task.reported_metrics == ("accuracy", "exact_match", *TEACHER_FORCED)
  assert tasks.TASKS["copying_text"](TaskContext(ByteTokenizer(), 2100)).sweep[-1] == 1024


@pytest.mark.parametrize("name", NEW_TASKS)
def test_an_oracle_that_reads_the_prompt_scores_one(ctx, name):
  """Greedy: the prompt's passage as the output; teacher forced: logits peaked on the prompt's
  token at each target position (its loss near 0); a uniform model's loss is log V."""
  task = tasks.TASKS[name](ctx)
  sep, vocab = len(ctx.separator), ctx.tokenizer.vocab_size
  greedy, forced, uniform = [], [], []
  for e in _examples(task, 3):
    copy = e.prompt[:-sep]
    greedy.append(task.score(e, copy))
    predictions, losses = _forced(50.0 * np.eye(vocab)[copy], e.target)
    forced.append(scoring.teacher_forced(predictions, losses, e.target, e.scored))
    predictions, losses = _forced(np.zeros((len(e.target), vocab)), e.target)
    uniform.append(scoring.teacher_forced(predictions, losses, e.target))
  assert _mean(greedy) == {"accuracy": 1.0, "exact_match": 1.0}
  assert _mean(forced)["tf_accuracy"] == 1.0 and _mean(forced)["target_loss"] < 1e-12
  assert _mean(uniform)["target_loss"] == pytest.approx(np.log(vocab))


def test_teacher_forced_metrics_count_only_scored_tokens():
  target = np.array([5, 6, 7, 8])
  scored = np.array([True, False, True, True])
  losses = np.array([0.5, 9.0, 1.5, 2.5])
  got = scoring.teacher_forced(np.array([5, 0, 0, 8]), losses, target, scored)
  assert got == {"tf_accuracy": pytest.approx(2 / 3), "target_loss": pytest.approx(
      np.average(losses, weights=scored))}


def test_frequent_copying_guesser_scores_one_over_256(ctx):
  task = tasks.TASKS["copying_frequent"](ctx)
  examples = _examples(task, 40)
  frequent = ctx.alphabet[:synthetic.FREQUENT_TOKENS]
  drawn = np.concatenate([e.target for e in examples])
  assert set(drawn.tolist()) <= set(frequent.tolist())
  assert len(set(drawn.tolist())) > 0.9 * len(frequent)  # uniform: nearly every id appears
  assert task.chance(16) == 1 / min(256, len(ctx.alphabet))
  if not isinstance(ctx.tokenizer, ByteTokenizer):
    assert len(ctx.alphabet) > 256  # the cut to the frequent ids is exercised
  rng = np.random.default_rng(0)
  guessed = [task.score(e, rng.choice(frequent, len(e.target))) for e in examples]
  sizes = [len(e.target) for e in examples]
  pooled = np.average([g["accuracy"] for g in guessed], weights=sizes)
  assert abs(pooled - task.chance(16)) < 4 * np.sqrt(task.chance(16) / sum(sizes))
  assert _mean(guessed)["exact_match"] == 0.0


def test_natural_copying_guesser_scores_the_unigram_chance(ctx):
  """A guesser that draws tokens with the prose's frequencies is right with sum p^2."""
  task = tasks.TASKS["copying_text"](ctx)
  counts = np.bincount(ctx.prose_ids)
  p = counts / counts.sum()
  assert task.chance(64) == pytest.approx(float(np.sum(p ** 2)), rel=1e-12)
  assert 1 / len(ctx.alphabet) < task.chance(64) < p.max()
  rng = np.random.default_rng(1)
  examples = _examples(task, 20)
  guessed = [task.score(e, rng.choice(len(p), len(e.target), p=p)) for e in examples]
  pooled = np.average([g["accuracy"] for g in guessed], weights=[len(e.target) for e in examples])
  assert pooled == pytest.approx(task.chance(64), rel=0.15)


@pytest.mark.parametrize("name", NEW_TASKS)
def test_the_same_seed_gives_the_same_examples(ctx, name):
  task = tasks.TASKS[name](ctx)
  for d in task.sweep:
    first, again, other = (task.examples(s, d, 3) for s in (7, 7, 8))
    assert all(np.array_equal(a.prompt, b.prompt) for a, b in zip(first, again))
    assert not any(np.array_equal(a.prompt, b.prompt) for a, b in zip(first, other))


def test_natural_copy_prompts_are_contiguous_held_out_prose(ctx):
  task = tasks.TASKS["copying_text"](ctx)
  sep = len(ctx.separator)
  assert task.sweep == tuple(n for n in (16, 32, 64, 128, 256, 512, 1024) if 2 * n + 1 <= ctx.room)
  stream = ctx.prose_ids
  starts = []
  for e in _examples(task, 4):
    passage = e.prompt[:-sep]
    assert np.array_equal(e.prompt[-sep:], ctx.separator) and np.array_equal(e.target, passage)
    found = [s for s in np.flatnonzero(stream[:len(stream) - len(passage) + 1] == passage[0])
             if np.array_equal(stream[s:s + len(passage)], passage)]
    assert found
    starts.append(found[0])
  assert len(set(starts)) == len(starts)  # random offsets, not one passage
  if isinstance(ctx.tokenizer, ByteTokenizer):  # byte ids are the text: Milton's own words
    milton = "".join(resources.prose_passages())
    e = task.examples(0, 64, 1)[0]
    assert ctx.tokenizer.decode(e.target).strip("\ufffd") in milton


def _perturbed(params, scale=0.3):
  """`params` plus Gaussian noise: an initialised model's argmax is nearly the same token at every
  step, which would make greedy and teacher-forced agreement trivial; noisy weights vary it."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def runs():
  """Tiny models with random weights in both layouts (next-token Hawk, bidirectional Birdie)."""
  tokenizer = ByteTokenizer()
  mesh = None
  out = []
  for birdie in (False, True):
    config = tiny_config()
    config.train.seq_len = 128
    if birdie:
      config.curriculum = "birdie"
      config.model.bidirectional = True
    mesh = mesh or make_mesh(config.mesh.shape)
    setup = make_train_setup(config, tokenizer.vocab_size, mesh)
    params = _perturbed(init_train_state(config, setup, tokenizer.vocab_size).params)
    out.append((config, setup, params))
  return tokenizer, out


@pytest.mark.usefixtures("fast_compile")
def test_teacher_forced_and_greedy_metrics_agree_on_a_real_model(runs):
  """The greedy output's first token is the teacher-forced argmax at the first target position;
  fed back as the target, the greedy output is predicted exactly, teacher forced and greedily."""
  tokenizer, arms = runs
  for config, setup, params in arms:
    settings = eval_settings.default_settings()
    names = "copying_text" if config.curriculum == "birdie" else "copying_frequent,copying_text"
    settings.update({"tasks": names, "examples": 2, "seq_len": 128, "batch_size": 4})
    evaluator = Evaluator(config, tokenizer, setup, settings=settings)
    assert evaluator.layout.kind == ("prefix" if config.curriculum == "birdie" else "continuation")
    report = evaluator.run(params, step=0)
    for name, result in report.tasks.items():
      assert result.metrics == ("accuracy", "exact_match", *TEACHER_FORCED)
      assert set(result.overall) == set(result.metrics)
      assert all(set(result.metrics) <= set(row) for row in result.rows)
      assert all(0 < row["target_loss"] < np.inf and 0 <= row["tf_accuracy"] <= 1
                 for row in result.rows)
      assert f"| {name} | tf_accuracy |" in report.markdown()
    for task in evaluator.tasks:
      fed_back = {}
      for d, examples in evaluator.examples[task.name].items():
        greedy, forced = evaluator.outputs(params, task, examples)
        assert [int(g[0]) for g in greedy] == [int(f.predictions[0]) for f in forced]
        assert all(len(set(g[:d].tolist())) > d // 4 for g in greedy)  # outputs vary
        fed_back[d] = [Example(prompt=e.prompt, target=np.asarray(g[:len(e.target)], np.int32))
                       for e, g in zip(examples, greedy)]
        _, refed = evaluator.outputs(params, task, fed_back[d])
        for e, f in zip(fed_back[d], refed):
          assert np.array_equal(f.predictions, e.target)
      evaluator.examples[task.name] = fed_back
    for result in evaluator.run(params, step=0).tasks.values():
      assert all(row["tf_accuracy"] == 1.0 and row["accuracy"] == 1.0 for row in result.rows)
