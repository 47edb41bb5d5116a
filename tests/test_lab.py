"""The mechanism lab: task generators against oracles, the vmapped replicas against single
models, the sweep's resume, the LR choice and the report's verdicts."""
import concurrent.futures
import json
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.errors import ConfigError
from birdie_jax.lab import point as lab_point
from birdie_jax.lab import report, settings as lab_settings, sweep, tasks, verdicts
from birdie_jax.lab.replicas import Replicas, batch_indices, decode_state_size
from configs import lab as lab_configs

DATA_IDS = 600


def _oracle(task: str, e: tasks.Example) -> np.ndarray:
  """The answer read off the prompt (and, for MQAR, the teacher-forced keys before each value)."""
  x, y = e.prompt, e.answer
  if task in ("mqar", "mqar_pq"):
    pairs = x[:np.flatnonzero(x == tasks.SEP_ID)[0]] if task == "mqar_pq" else x
    table = dict(zip(pairs[0::2].tolist(), pairs[1::2].tolist()))
    out = y.copy()
    for j in np.flatnonzero(e.scored):
      out[j] = table[int(y[j - 1])]
    return out
  if task.startswith("disjoint"):
    sep = np.flatnonzero(x == tasks.SEP_ID)[0]
    return np.intersect1d(x[:sep], x[sep + 1:])
  if task == "copying":
    return x.copy()
  if task == "selective_copying":
    return x[x != tasks.FIRST_DATA_ID]
  if task.startswith("phonebook"):
    sep = np.flatnonzero(x == tasks.SEP_ID)[0]
    name, book = (x[:sep], x[sep + 1:]) if task == "phonebook_qf" else (x[sep + 1:], x[:sep])
    entries = book.reshape(-1, tasks.NAME_LEN + tasks.DIGITS)
    match = np.flatnonzero((entries[:, :tasks.NAME_LEN] == name).all(1))
    assert len(match) == 1
    return entries[match[0], tasks.NAME_LEN:]
  raise AssertionError(task)


@pytest.mark.parametrize("task", tasks.TASKS)
def test_oracle_scores_everything_and_guessing_scores_chance(task):
  rng = np.random.default_rng(0)
  d = 24
  hits, total = 0, 0
  for i in range(40):
    e = tasks.example(task, d, tasks.example_rng(0, task, d, "test", i), DATA_IDS)
    np.testing.assert_array_equal(_oracle(task, e)[e.scored], e.answer[e.scored])
    guess = rng.choice(np.unique(e.answer[e.scored]) if False else
                       np.arange(tasks.FIRST_DATA_ID, tasks.FIRST_DATA_ID + DATA_IDS),
                       e.scored.sum())
    hits += int((guess == e.answer[e.scored]).sum())
    total += int(e.scored.sum())
  # a uniform guess over the data ids scores ~1/DATA_IDS: far below anything learned
  assert hits / total < 0.03


def test_examples_reproducible_and_splits_disjoint():
  a = tasks.rows("mqar", 16, "train", 8, data_ids=DATA_IDS)
  b = tasks.rows("mqar", 16, "train", 8, data_ids=DATA_IDS)
  c = tasks.rows("mqar", 16, "test", 8, data_ids=DATA_IDS)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["inputs"], c["inputs"])


@pytest.mark.parametrize("task", ["mqar", "disjoint_lf", "phonebook_ql"])
def test_layout_prefix_is_the_prompt_and_targets_are_the_shifted_answer(task):
  e = tasks.example(task, 16, tasks.example_rng(1, task, 16, "train", 3), DATA_IDS)
  row = tasks.layout(e, len(e.prompt) + len(e.answer) + 5)
  p = len(e.prompt)
  assert row["prefix_mask"].sum() == p and row["prefix_mask"][:p].all()
  assert row["inputs"][p] == tasks.BEGIN_ID
  np.testing.assert_array_equal(row["inputs"][p + 1:p + len(e.answer)], e.answer[:-1])
  np.testing.assert_array_equal(row["targets"][p:p + len(e.answer)], e.answer)
  np.testing.assert_array_equal(row["loss_mask"][p:p + len(e.answer)], e.scored)
  assert row["loss_mask"][:p].sum() == 0 and row["segment_ids"][-5:].sum() == 0


def test_batch_indices_are_epochs_of_permutations_and_resume_exactly():
  pool, batch, seeds = 10, 4, (0, 7)
  whole = batch_indices(pool, batch, seeds, 0, 10)  # 40 rows = 4 epochs
  for r in range(2):
    flat = whole[:, r].reshape(-1)
    for epoch in range(4):
      assert sorted(flat[epoch * pool:(epoch + 1) * pool]) == list(range(pool))
  assert not np.array_equal(whole[:, 0], whole[:, 1])
  np.testing.assert_array_equal(batch_indices(pool, batch, seeds, 3, 5), whole[3:8])


def _settings(**overrides):
  c = lab_configs.get_config("toy")
  c.update(overrides)
  return c


def test_vmapped_replicas_train_like_separate_models():
  """Replica r of a vmapped group ends where a group of one with r's LR and seed ends."""
  s = _settings(widths="32")
  p = lab_settings.Point("mqar", 8, "hawk", "bidirectional", 32)
  cfg, spec = lab_point.model_config(s, p), lab_point.train_spec(s)
  pool = {k: jnp.asarray(v) for k, v in tasks.rows("mqar", 8, "train", 64, data_ids=64).items()}
  lrs, seeds = [3e-3, 1e-2, 1e-2], [0, 0, 1]
  group = Replicas(cfg, tasks.vocab_size(64), spec, lrs, seeds)
  idx = batch_indices(64, 8, seeds, 0, 6)
  params, _ = group.train(group.init(), pool, jnp.asarray(idx))[0]
  for r in (1, 2):
    alone = Replicas(cfg, tasks.vocab_size(64), spec, [lrs[r]], [seeds[r]])
    single, _ = alone.train(alone.init(), pool, jnp.asarray(idx[:, r:r + 1]))[0]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single)):
      np.testing.assert_allclose(np.asarray(a)[r], np.asarray(b)[0], rtol=2e-4, atol=2e-5)
  first = jax.tree.leaves(params)
  assert not np.allclose(np.asarray(first[0])[0], np.asarray(first[0])[1])  # LRs differ


def test_decode_state_size_matches_the_cache_formulas():
  s = _settings()
  hawk = lab_point.model_config(s, lab_settings.Point("mqar", 8, "hawk", "causal", 64))
  conv = hawk.conv_width - 1
  assert decode_state_size(hawk, 100, 50) == hawk.depth * (1 + conv) * hawk.lru_width
  # A bidirectional layer decodes from its forward half (the reverse half runs over the prefix).
  for every in (1, 2):
    s.bidirectional_every = every
    both = lab_point.model_config(s, lab_settings.Point("mqar", 8, "hawk", "bidirectional", 64))
    halved = len(range(0, both.depth, every))
    assert decode_state_size(both, 100, 50) == (both.depth * (1 + conv) * both.lru_width
                                                - halved * both.lru_width // 2)
  tf = lab_point.model_config(s, lab_settings.Point("mqar", 8, "transformer", "causal", 64))
  per_layer = 2 * 50 * tf.num_kv_heads * tf.head_dim
  assert decode_state_size(tf, 100, 50) == tf.depth * per_layer


def test_transformer_learns_mqar_and_the_lr_sweep_picks_the_learning_rate(tmp_path):
  """The lab's own sanity check at toy size: a 2-layer width-64 Transformer learns MQAR with 8
  pairs; a learning rate too small to move the weights is never chosen."""
  s = _settings(tasks="mqar:8", widths="64", data_ids=32, learning_rates="1e-7,3e-3", seeds=1,
                steps=400, batch_size=32, train_examples=8000, eval_every=100, chunk_steps=100,
                test_examples=128, val_examples=64)
  assert sweep.run_sweep(s, str(tmp_path), log=lambda _: None)
  (result,) = report.load_results(str(tmp_path))
  assert result["best"]["learning_rate"] == 3e-3
  assert result["best"]["test_accuracy"][0] >= 0.9
  assert result["test_accuracy"][0] < 0.2  # the frozen replica stays near chance


def test_killed_sweep_resumes_without_redoing_points_and_a_cut_point_resumes_exactly(tmp_path):
  s = _settings(tasks="mqar:8,copying:8", data_ids=64)
  first = tmp_path / "a"
  with pytest.raises(KeyboardInterrupt):  # killed right after the first point finished

    def log(line):
      if " done in " in line:
        raise KeyboardInterrupt

    sweep.run_sweep(s, str(first), log=log)
  (done_file,) = list((first / "points").iterdir())
  stamp = done_file.stat().st_mtime_ns
  lines = []
  assert sweep.run_sweep(s, str(first), log=lines.append)
  assert lines[0].startswith("lab: 1 of 2 points")
  assert done_file.stat().st_mtime_ns == stamp
  # A point cut by the deadline after its first chunk saves its state; resumed, it ends exactly
  # where an uncut run ends.
  point = lab_settings.points(s)[1]
  cut = tmp_path / "cut"
  with pytest.raises(lab_point.OutOfTime):
    lab_point.run_point(s, point, str(cut), deadline=0.0, log=lambda _: None)
  assert (cut / "partial" / f"{point.name}.npz").exists()
  resumed = lab_point.run_point(s, point, str(cut), log=lambda _: None)
  whole = json.loads((first / "points" / f"{point.name}.json").read_text())
  assert resumed["curve"] == whole["curve"]
  np.testing.assert_allclose(resumed["test_accuracy"], whole["test_accuracy"])
  assert not (cut / "partial" / f"{point.name}.npz").exists()


def test_two_workers_train_every_point_as_one_does(tmp_path, monkeypatch):
  """Two worker threads share the points (each trained once, on both threads) and end with the
  results one worker gets; workers only choose how points run, so a workdir accepts a change."""
  s = _settings(tasks="mqar:8,copying:8", data_ids=64)
  assert sweep.run_sweep(s, str(tmp_path / "one"), log=lambda _: None)
  threads = []
  run_point = sweep.run_point
  monkeypatch.setattr(sweep, "run_point", lambda settings, point, *a, **k: threads.append(
      (point.name, threading.current_thread().name)) or run_point(settings, point, *a, **k))
  s.workers = 2
  assert sweep.run_sweep(s, str(tmp_path / "two"), log=lambda _: None)
  names = [p.name for p in lab_settings.points(s)]
  assert sorted(n for n, _ in threads) == sorted(names)  # each point once
  assert len({t for _, t in threads}) == 2
  for name in names:
    one, two = (json.loads((tmp_path / d / "points" / f"{name}.json").read_text())
                for d in ("one", "two"))
    assert [step for step, _ in one["curve"]] == [step for step, _ in two["curve"]]
    np.testing.assert_allclose([a for _, a in one["curve"]], [a for _, a in two["curve"]])
    np.testing.assert_allclose(one["test_accuracy"], two["test_accuracy"])
  sweep.check_identity(s, str(tmp_path / "one"))  # workers: a selection key


def test_workers_asking_for_the_same_rows_at_once_draw_them_once(monkeypatch):
  drawn = []
  rows = tasks.rows

  def slow_rows(*args, **kwargs):
    drawn.append(args)
    time.sleep(0.2)  # the others ask while this one draws
    return rows(*args, **kwargs)

  monkeypatch.setattr(tasks, "rows", slow_rows)
  lab_point._drawn_rows.cache_clear()
  key = ("mqar", (4,), "val", 8, 64)
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(lambda _: lab_point._host_rows(*key), range(3)))
  assert len(drawn) == 1 and all(r is results[0] for r in results)
  lab_point._drawn_rows.cache_clear()


def test_a_workdir_refuses_settings_that_change_its_points(tmp_path):
  s = _settings()
  sweep.check_identity(s, str(tmp_path))
  sweep.check_identity(_settings(widths="32,64", tasks="copying:8"), str(tmp_path))  # selection
  with pytest.raises(ConfigError, match="steps"):
    sweep.check_identity(_settings(steps=41), str(tmp_path))


@pytest.mark.parametrize("overrides,match", [
    ({"tasks": "mqar"}, "task:difficulty"), ({"tasks": "nope:3"}, "unknown lab task"),
    ({"tasks": "mqar:64", "data_ids": 64}, "data ids"), ({"families": "rnn"}, "families"),
    ({"widths": "33"}, "even"), ({"learning_rates": "0"}, "> 0"), ({"seeds": 0}, "seeds")])
def test_bad_settings_get_one_line(overrides, match):
  with pytest.raises(ConfigError, match=match):
    lab_settings.validate(_settings(**overrides))


def _result(task, family, layout, width, accs, d=64, state=100):
  return {"point": {"task": task, "difficulty": d, "family": family, "layout": layout,
                    "width": width, "name": f"{task}-{family}-{layout}-{width}"},
          "best": {"test_accuracy": accs, "learning_rate": 1e-3}, "state_size": state * width,
          "device": "cpu", "params": 1, "tokens_per_second": None, "compile_seconds": 0.0,
          "train_seconds": 0.0}


def test_verdicts_from_constructed_results():
  good, bad = [0.99, 1.0, 0.995], [0.2, 0.25, 0.22]
  assert verdicts.sanity([_result("mqar", "transformer", "causal", 64, [1.0, 1.0, 0.999])])[0]
  assert verdicts.sanity([_result("mqar", "transformer", "causal", 64, bad)])[0] is False
  assert verdicts.sanity([])[0] is None
  prefix_lm = _result("mqar", "transformer", "bidirectional", 64, bad)  # a result, not the gate
  assert verdicts.sanity([_result("mqar", "transformer", "causal", 64, good), prefix_lm])[0]
  win = [_result("disjoint_lf", "hawk", "causal", 64, bad),
         _result("disjoint_sf", "hawk", "bidirectional", 64, good),
         _result("disjoint_lf", "hawk", "bidirectional", 64, good)]
  assert "**holds**" in verdicts.disjointness_verdict(win)[0]
  overlap = win[:2] + [_result("disjoint_lf", "hawk", "bidirectional", 64, [0.1, 0.95, 0.99])]
  assert "does not hold" in verdicts.disjointness_verdict(overlap)[0]
  near = [_result("phonebook_ql", "hawk", "causal", 64, [0.5, 0.52, 0.48]),
          _result("phonebook_ql", "hawk", "causal", 128, [0.9, 0.9, 0.91]),
          _result("phonebook_ql", "hawk", "bidirectional", 64, [0.8, 0.82, 0.81])]
  line = verdicts.margin_verdict(near, "phonebook_ql")[0]
  assert "w64" in line and "**holds**" in line
  assert "(1.0e-03; state 6,400), bidirectional 0.81" in line  # each side's decode state
  only_causal = near + [_result("phonebook_ql", "hawk", "causal", 256, [0.5, 0.5, 0.5])]
  assert "w64" in verdicts.margin_verdict(only_causal, "phonebook_ql")[0]  # w256 has no pair
  near[2]["best"]["test_accuracy"] = [0.6, 0.62, 0.61]  # beats it, but by less than the margin
  assert "does not hold" in verdicts.margin_verdict(near, "phonebook_ql")[0]


def test_report_writes_tables_and_plots(tmp_path):
  results = [_result("mqar", "transformer", "causal", w, [1.0, 1.0]) for w in (32, 64)]
  (tmp_path / "points").mkdir()
  for r in results:
    (tmp_path / "points" / f"{r['point']['name']}.json").write_text(json.dumps(r))
  text = report.write_report(str(tmp_path), str(tmp_path / "LAB.md"))
  assert text.index("## Sanity gate") < text.index("## Per task")
  assert "| transformer | causal | 1.00 ± 0.00 (1.0e-03) | 1.00 ± 0.00 (1.0e-03) |" in text
  assert (tmp_path / "lab-mqar-64.png").stat().st_size > 1000
