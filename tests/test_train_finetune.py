"""The fine-tuning protocol (birdie_jax/train/finetune*.py): its schedule, held-out split, book
curriculum, learning-rate choice, and on a tiny pre-trained model that replaying pre-training rows
keeps held-out perplexity while the task is learned (and that without replay it does not)."""
import contextlib
import dataclasses
import itertools
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals import settings as eval_settings
from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.mqar import MQAR
from birdie_jax.evals.phonebook import Phonebook
from birdie_jax.evals.runner import Evaluator
from birdie_jax.evals.task import FORWARD, Example, Task, TaskContext
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train import finetune as ft
from birdie_jax.train import finetune_protocol as fp
from birdie_jax.train.finetune_curriculum import training_stages
from birdie_jax.train.finetune_heldout import selection_examples
from birdie_jax.train.optimizer import make_optimizer
from birdie_jax.train.state import init_train_state, make_train_setup
from helpers import packed_batch, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)


def _evaluator(tasks="mqar", seq_len=128, family="transformer"):
  config = tiny_config()
  config.model.family = family
  config.model.num_kv_heads = config.model.num_heads
  config.train.seq_len = 128
  tokenizer = ByteTokenizer()
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  settings = eval_settings.default_settings()
  settings.update(tasks=tasks, seq_len=seq_len, examples=4, batch_size=8)
  return config, Evaluator(config, tokenizer, setup, settings=settings)


def test_the_schedule_warms_up_then_decays_by_cosine():
  """Adam's update under a constant gradient is the learning rate itself (m / sqrt(v) = 1), so the
  optimizer's own updates trace its schedule; compared with the formula in float64."""
  config = ft.finetune_config(tiny_config(), steps=100, batch_size=8, seq_len=64,
                              learning_rate=1e-3, schedule=ft.Schedule(0.1, 0.1, 0.0))
  tx = make_optimizer(config.train)
  params = {"w": jnp.zeros((2, 2))}
  grads = {"w": jnp.full((2, 2), 0.01)}
  state, rates, update = tx.init(params), [], jax.jit(tx.update)
  for _ in range(100):
    updates, state = update(grads, state, params)
    rates.append(-float(updates["w"][0, 0]))
  t = np.arange(100, dtype=np.float64)
  warm = t / 10 * 1e-3
  cosine = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * (t - 10) / 90))
  np.testing.assert_allclose(rates, np.where(t < 10, warm, cosine), rtol=1e-4, atol=1e-9)
  assert rates[0] == 0.0 and max(rates) == pytest.approx(1e-3, rel=1e-4) and rates[-1] < 1.1e-4
  assert config.train.weight_decay == 0.0


def test_steps_to_a_threshold_come_from_the_curve():
  curve = [fp.CurvePoint(s, v, 0.0) for s, v in ((0, 0.1), (10, 0.4), (20, 0.5), (30, 0.89),
                                                  (40, 0.95), (50, 0.7))]
  assert fp.steps_to(curve, 0.5) == 20 and fp.steps_to(curve, 0.9) == 40
  assert fp.steps_to(curve, 0.96) is None and fp.steps_to(curve[:1], 0.05) == 0


@pytest.mark.parametrize("cls, seq_len", [(MQAR, 128), (Phonebook, 512)])
def test_the_heldout_split_is_disjoint_from_training_and_evaluation(cls, seq_len):
  task = cls(TaskContext(ByteTokenizer(), seq_len))
  d = task.sweep[0]
  heldout = selection_examples(task, 1, d, 16)
  evaluation = task.examples(1, d, 16)
  training = [e for e in task.training_examples(1, 0, 64, [d])]
  key = lambda e: (e.prompt.tobytes(), e.target.tobytes())  # noqa: E731
  held = {key(e) for e in heldout}
  assert len(held) == 16 and not held & {key(e) for e in evaluation + training}
  assert [key(e) for e in selection_examples(task, 1, d, 16)] == [key(e) for e in heldout]


def _book_entries(batch, tokenizer):
  """Per packed example: how many 'Name: ddd-ddd-dddd' lines its prompt holds."""
  counts = []
  for row in range(len(batch["inputs"])):
    for s in range(1, batch["segment_ids"][row].max() + 1):
      where = (batch["segment_ids"][row] == s) & (batch["loss_mask"][row] == 0)
      text = tokenizer.decode(batch["inputs"][row, where].tolist())
      counts.append(len(re.findall(r": \d{3}-\d{3}-\d{4}\n", text)))
  return counts


def test_the_phonebook_curriculum_draws_small_books_first():
  _, evaluator = _evaluator("phonebook", seq_len=4096)
  task = evaluator.tasks[0]
  stages = training_stages(evaluator, task, steps=4, fraction=0.5, small_books=(10, 30, 50))
  assert [s for s, _ in stages] == [2, 2]
  batches = list(ft.task_batches(evaluator, stages, rows=2, seed=0))
  small = [n for b in batches[:2] for n in _book_entries(b, evaluator.tokenizer)]
  full = [n for b in batches[2:] for n in _book_entries(b, evaluator.tokenizer)]
  assert len(small) > 4 and 8 <= min(small) and max(small) <= 55
  assert min(full) > 80  # a 4096-byte context holds over a hundred
  # MQAR has one stage; at a context of 512 bytes a full book is already small: one stage too.
  mqar = MQAR(evaluator.context)
  assert [s for s, _ in training_stages(evaluator, mqar, 4, 0.5, (10, 50))] == [4]
  _, short = _evaluator("phonebook", seq_len=512)
  assert len(training_stages(short, short.tasks[0], 4, 0.5, (10, 50))) == 2
  assert len(training_stages(short, short.tasks[0], 4, 0.5, (50,))) == 1


class _Constant(Task):
  """A task one learning rate learns in a few steps: the target is always 'ab', the prompt is
  random bytes. The main metric is teacher-forced token accuracy."""

  name = "constant"
  kind = FORWARD
  metrics = ("accuracy",)
  candidates = (8,)

  def fits(self, difficulty):
    return difficulty + 2 <= self.ctx.room

  def example(self, rng, difficulty):
    prompt = self.ctx.encode("".join(rng.choice(list("xyz"), difficulty)))
    return Example(prompt=prompt, target=self.ctx.encode("ab"))

  def score(self, example, output):
    return {"accuracy": float(np.mean(output.predictions == example.target))}

  def chance(self, difficulty):
    return 1 / self.ctx.tokenizer.vocab_size


@pytest.mark.usefixtures("fast_compile")
def test_the_sweep_chooses_the_learning_rate_best_on_the_heldout_split(monkeypatch):
  """LR 0 leaves a random model at chance; 1e-2 learns the constant answer. The working LR is
  chosen whichever its place in the sweep, and the evaluation is of its params."""
  monkeypatch.setitem(task_registry.TASKS, "constant", _Constant)
  config, evaluator = _evaluator("mqar")
  params = init_train_state(config, evaluator.placed, evaluator.tokenizer.vocab_size).params
  settings = fp.FinetuneSettings(tasks=("constant",), learning_rates=(0.0, 1.0), lr_scale=1e-2,
                                 steps=12, batch_size=8, eval_every=6, heldout_examples=4,
                                 perplexity_examples=2)
  result = fp.run_protocol(evaluator, config, params, settings, replay=None).tasks["constant"]
  zero, working = result.runs
  assert zero.final_score < 0.5 and working.final_score == 1.0
  assert result.chosen_learning_rate == pytest.approx(1e-2) and result.chosen is working
  assert result.evaluation.overall["accuracy"] == 1.0
  assert [p.step for p in working.curve] == [0, 6, 12] and working.steps_to_90 in (6, 12)
  assert zero.perplexity_after == pytest.approx(zero.perplexity_before, rel=1e-5)
  assert fp.choose(list(reversed(result.runs))) is working
  smaller = fp.LearningRateRun("t", 1e-3, 1, 1, working.curve, (), 1.0, 1.0, 0.0)
  assert fp.choose([working, smaller]) is smaller  # equal scores: the smaller learning rate
  json = fp.ProtocolResult(settings, {"constant": result}).to_json()
  assert json["tasks"]["constant"]["chosen"]["steps_to_90"] == working.steps_to_90
  # A best LR at the sweep's top edge: the next half-decades up are tried, up to the extra ones.
  edge = dataclasses.replace(settings, learning_rates=(0.0, 0.3), extra_learning_rates=2)
  swept = fp.run_protocol(evaluator, config, params, edge, replay=None).tasks["constant"]
  rates = [r.learning_rate for r in swept.runs]
  assert len(rates) >= 3, rates  # 3e-3 beats 0 (at chance): the top edge, so one more
  np.testing.assert_allclose(rates, [0.0, 3e-3, 3e-3 * 10 ** 0.5, 3e-2][:len(rates)], rtol=1e-6)
  top = max(range(len(rates)), key=rates.__getitem__)
  assert swept.runs.index(swept.chosen) != top or len(rates) == 4  # stopped: inside, or budget


def test_bad_settings_are_one_clear_line():
  with pytest.raises(ConfigError, match="replay_fraction must be in"):
    fp.FinetuneSettings(replay_fraction=1.0)
  with pytest.raises(ConfigError, match="fine-tuning steps must be >= 1, got 0"):
    fp.settings_from({"steps": 0})
  with pytest.raises(ConfigError, match="extra_learning_rates must be >= 0, got -1"):
    fp.settings_from({"extra_learning_rates": -1})
  with pytest.raises(ConfigError, match="unknown fine-tuning setting 'lr'"):
    fp.settings_from({"lr": 1e-3})
  assert fp.FinetuneSettings().replay_rows == 16
  defaults = fp.FinetuneSettings()
  assert defaults.steps * (defaults.batch_size - defaults.replay_rows) >= 100_000


def test_replay_rows_carry_their_share_of_the_loss():
  task = {"inputs": np.ones((3, 8), np.int32), "loss_mask": np.zeros((3, 8), np.float32)}
  task["loss_mask"][:, :2] = 1  # 6 task tokens
  rows = ({"inputs": np.full(8, 2, np.int32), "loss_mask": np.ones(8, np.float32)}
          for _ in itertools.count())  # 8 tokens each
  out = next(ft.with_replay(iter([task]), rows, rows=2, fraction=0.25))
  assert out["inputs"].shape == (5, 8) and (out["inputs"][3:] == 2).all()
  assert out["loss_mask"][:3].sum() == pytest.approx(0.75)
  assert out["loss_mask"][3:].sum() == pytest.approx(0.25)
  assert np.allclose(out["loss_mask"][3:], 0.25 / 16)


@pytest.mark.usefixtures("fast_compile")
def test_replay_keeps_heldout_perplexity_while_the_task_is_learned():
  """The issue's test. A tiny Transformer pre-trained on its byte-level Shakespeare (the same
  loop, replay rows only) is fine-tuned on MQAR at a high LR: with half of each batch replayed,
  held-out (Milton) perplexity stays within 20% of its value before and the held-out task loss
  falls; without replay the same fine-tune raises perplexity well beyond that."""
  config, evaluator = _evaluator("mqar")
  tokenizer = evaluator.tokenizer

  def replay():
    return ft.pretraining_rows(config, tokenizer, seq_len=128, seed=0)

  def rows_as_batches(rows):
    while True:
      group = [next(rows) for _ in range(8)]
      yield {k: np.stack([r[k] for r in group]) for k in group[0]}

  params = init_train_state(config, evaluator.placed, tokenizer.vocab_size).params
  params, _ = ft.train(evaluator, config, params, rows_as_batches(replay()), steps=120,
                       batch_size=8, learning_rate=3e-3, log_every=1000)
  out = {}
  for fraction in (0.5, 0.0):
    settings = fp.FinetuneSettings(tasks=("mqar",), learning_rates=(3e-3,), steps=40,
                                   batch_size=8, replay_fraction=fraction, eval_every=40,
                                   heldout_examples=4, perplexity_examples=4, log_every=1000)
    out[fraction] = fp.run_protocol(evaluator, config, params, settings,
                                    replay).tasks["mqar"].chosen
  kept, forgot = out[0.5], out[0.0]
  assert kept.perplexity_before < 30  # pre-training worked (uniform: 260)
  assert kept.perplexity_after < 1.2 * kept.perplexity_before
  assert kept.curve[-1].loss < 0.8 * kept.curve[0].loss
  assert forgot.perplexity_after > 1.5 * forgot.perplexity_before
  assert math.isclose(forgot.perplexity_before, kept.perplexity_before)
  assert jax.tree.leaves(params)[0].is_deleted() is False  # the sweep leaves params intact


class _Killed(Exception):
  """Stands for the SIGKILL that ends a lent GPU's call mid-sweep."""


@contextlib.contextmanager
def _killed_after_saving(monkeypatch, *, index: int, step: int):
  """Inside, the sweep on disk dies (`_Killed`) right after keeping LR `index`'s state at `step`."""
  save = fp.SweepProgress.save_running

  def save_then_die(self, i, s, state, meta):
    save(self, i, s, state, meta)
    if (i, s) == (index, step):
      raise _Killed

  with monkeypatch.context() as patch:
    patch.setattr(fp.SweepProgress, "save_running", save_then_die)
    yield


def _replay_rows():
  """A fresh, fixed stream of random next-token rows of 128 bytes (what replay supplies)."""
  rng = np.random.default_rng(7)
  while True:
    row = packed_batch(rng, 1, 128, 256)
    yield {k: v[0] for k, v in row.items()}


@pytest.mark.usefixtures("fast_compile")
def test_a_killed_sweep_resumes_to_the_uninterrupted_result(monkeypatch, tmp_path):
  """Killed in its second LR after a curve point, the sweep started again on the same folder
  takes the first LR's record and params from disk and trains the second on from that point
  with the batches it had not used: every curve point, loss, example count, choice and the
  evaluation equal those of a sweep never interrupted."""
  monkeypatch.setitem(task_registry.TASKS, "constant", _Constant)
  config, evaluator = _evaluator("mqar")
  params = init_train_state(config, evaluator.placed, evaluator.tokenizer.vocab_size).params
  settings = fp.FinetuneSettings(tasks=("constant",), learning_rates=(1.0, 0.03), lr_scale=1e-2,
                                 steps=12, batch_size=8, eval_every=4, heldout_examples=4,
                                 perplexity_examples=2, log_every=1)
  whole = fp.run_protocol(evaluator, config, params, settings, _replay_rows).tasks["constant"]
  assert whole.chosen_learning_rate == pytest.approx(1e-2)  # the first LR: its params from disk

  with pytest.raises(_Killed), _killed_after_saving(monkeypatch, index=1, step=8):
    fp.run_protocol(evaluator, config, params, settings, _replay_rows, str(tmp_path),
                    identity={"pretrained_step": 3})
  assert (tmp_path / "constant" / "lr0.json").exists()
  assert not (tmp_path / "constant" / "lr1.json").exists()

  trained = []
  train = ft.train
  monkeypatch.setattr(ft, "train", lambda *a, **k: trained.append(k["resume"]) or train(*a, **k))
  resumed = fp.run_protocol(evaluator, config, params, settings, _replay_rows, str(tmp_path),
                            identity={"pretrained_step": 3}).tasks["constant"]
  assert len(trained) == 1 and trained[0] is not None  # only the second LR trained, resumed
  for a, b in zip(whole.runs, resumed.runs, strict=True):
    assert a.learning_rate == b.learning_rate and a.examples_seen == b.examples_seen
    assert [(p.step, p.score) for p in a.curve] == [(p.step, p.score) for p in b.curve]
    np.testing.assert_allclose([p.loss for p in a.curve], [p.loss for p in b.curve], rtol=1e-5)
    assert [s for s, _ in a.losses] == [s for s, _ in b.losses] == list(range(1, 13))
    np.testing.assert_allclose([v for _, v in a.losses], [v for _, v in b.losses], rtol=1e-5)
    assert a.perplexity_after == pytest.approx(b.perplexity_after, rel=1e-5)
  assert resumed.chosen_learning_rate == whole.chosen_learning_rate
  assert resumed.evaluation.overall == pytest.approx(whole.evaluation.overall, rel=1e-5)
  assert not (tmp_path / "constant" / "running-1").exists()  # removed once LR 1 finished

  with pytest.raises(ConfigError, match="another fine-tuning sweep's progress .*pretrained_step"):
    fp.run_protocol(evaluator, config, params, settings, _replay_rows, str(tmp_path),
                    identity={"pretrained_step": 4})


@pytest.mark.usefixtures("fast_compile")
def test_a_pruned_sweep_trains_fewer_steps_and_its_survivors_equal_unpruned_runs(monkeypatch,
                                                                                 tmp_path):
  """Successive halving at step 4 of 12 over LRs 0, 3e-4 and 1e-2: LR 0 (its held-out loss
  unchanged) is pruned there, its record ending at step 4 with no params; the other two train
  on from their kept states. Each survivor's curve and losses equal its run in the same sweep
  without pruning (pausing changes nothing), so does the choice, and 3 x 4 + 2 x 8 steps were
  trained instead of 3 x 12. Killed in the last round and started again on its folder, the
  sweep ends as the one never stopped."""
  monkeypatch.setitem(task_registry.TASKS, "constant", _Constant)
  config, evaluator = _evaluator("mqar")
  params = init_train_state(config, evaluator.placed, evaluator.tokenizer.vocab_size).params
  full = fp.FinetuneSettings(tasks=("constant",), learning_rates=(0.0, 0.03, 1.0),
                             lr_scale=1e-2, steps=12, batch_size=8, eval_every=4,
                             heldout_examples=4, perplexity_examples=2, log_every=1)
  pruned = dataclasses.replace(full, prune_at=(4,))
  whole = fp.run_protocol(evaluator, config, params, full, _replay_rows).tasks["constant"]

  calls = []
  train = ft.train
  monkeypatch.setattr(ft, "train", lambda *a, **k: calls.append(
      (k["learning_rate"], k["until"], k["resume"] is not None)) or train(*a, **k))
  halved = fp.run_protocol(evaluator, config, params, pruned, _replay_rows).tasks["constant"]
  assert calls == [(0.0, 4, False), (3e-4, 4, False), (1e-2, 4, False),
                   (3e-4, None, True), (1e-2, None, True)]
  zero = halved.runs[0]
  assert not zero.complete and zero.trained_steps == 4 and zero.curve[-1].step == 4
  assert [s for s, _ in zero.losses] == [1, 2, 3, 4]
  for a, b in zip(whole.runs[1:], halved.runs[1:], strict=True):
    assert b.complete and a.learning_rate == b.learning_rate
    assert [(p.step, p.score) for p in a.curve] == [(p.step, p.score) for p in b.curve]
    np.testing.assert_allclose([p.loss for p in a.curve], [p.loss for p in b.curve], rtol=1e-5)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
  assert halved.chosen_learning_rate == whole.chosen_learning_rate == pytest.approx(1e-2)
  assert halved.evaluation.overall == pytest.approx(whole.evaluation.overall, rel=1e-5)

  monkeypatch.setattr(ft, "train", train)
  with pytest.raises(_Killed), _killed_after_saving(monkeypatch, index=2, step=8):
    fp.run_protocol(evaluator, config, params, pruned, _replay_rows, str(tmp_path))
  folder = tmp_path / "constant"
  assert json.loads((folder / "lr0.json").read_text())["trained_steps"] == 4
  assert not (folder / "params" / "0").exists()  # a pruned LR keeps no params
  resumed = fp.run_protocol(evaluator, config, params, pruned, _replay_rows,
                            str(tmp_path)).tasks["constant"]
  for a, b in zip(halved.runs, resumed.runs, strict=True):
    assert (a.learning_rate, a.trained_steps) == (b.learning_rate, b.trained_steps)
    np.testing.assert_allclose([p.loss for p in a.curve], [p.loss for p in b.curve], rtol=1e-5)
  assert resumed.evaluation.overall == pytest.approx(halved.evaluation.overall, rel=1e-5)
  with pytest.raises(ConfigError, match="prune_at must rise strictly"):
    dataclasses.replace(full, prune_at=(6,))  # not a curve point
  with pytest.raises(ConfigError, match="prune_at must rise strictly"):
    dataclasses.replace(full, prune_at=(8, 4))


def test_batches_made_ahead_come_in_order_and_carry_the_stream_s_error():
  def stream():
    yield from range(5)
    raise ValueError("bad document")
  with ft._Prefetched(stream(), depth=2) as ahead:
    assert [next(ahead) for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match="bad document"):
      next(ahead)
  with ft._Prefetched(iter(range(3))) as ahead:
    assert list(ahead) == [0, 1, 2]
