"""The lm-evaluation-harness adapter (birdie_jax/lm_eval.py, evals/harness_model.py) on a tiny
bidirectional Birdie run with random weights: its log-likelihoods are the sums of log-softmax
target probabilities of birdie_jax's own forward pass (`models.forward`) on each request laid out
alone, in both layouts, though it packs several requests to a row; greedy flags, generation cut at
the until strings, rolling windows that score every token once; lm-eval's `simple_evaluate` and the
CLI on local toy tasks (tests/data/lm_eval: no download)."""
import functools
import json
import math
import os
import sys
from unittest import mock

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pytest  # noqa: E402

from birdie_jax import cli  # noqa: E402
from birdie_jax import lm_eval as adapter  # noqa: E402
from birdie_jax.data import special_tokens  # noqa: E402
from birdie_jax.data.tokenizer import ByteTokenizer  # noqa: E402
from birdie_jax.evals import harness_model  # noqa: E402
from birdie_jax.evals.harness_model import cut_at  # noqa: E402
from birdie_jax.models.forward import batch_logits, token_losses  # noqa: E402
from birdie_jax.models.placed import place_model  # noqa: E402
from birdie_jax.parallel.mesh import make_mesh  # noqa: E402
from birdie_jax.parallel.sharding import axis_rules  # noqa: E402
from birdie_jax.train.checkpointing import param_shapes  # noqa: E402
from birdie_jax.train.identity import check_resume  # noqa: E402
from birdie_jax.trained_run import load_run  # noqa: E402
from helpers import ROOT, flags_of, tiny_config  # noqa: E402
from models_helpers import fast_compile  # noqa: E402,F401  (fixture)

TASKS = str(ROOT / "tests" / "data" / "lm_eval")
SEQ_LEN = 64
BATCH = 2  # rows per forward pass: packing and a two-row batch both happen


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A Birdie-curriculum bidirectional Hawk workdir (bytes, seq_len 64) whose checkpoint holds
  random N(0, 0.5^2) weights (an initialised or 2-step model repeats its last byte, which would
  not tell a misplaced position from a right one), written as training writes it: run.json with
  the pinned tokenizer, config.json, `checkpoints/1` with the params and their shapes."""
  path = str(tmp_path_factory.mktemp("run"))
  config = tiny_config()
  config.curriculum = "birdie"
  config.model.update(bidirectional=True, depth=1)  # one block: half the compile time
  config.train.seq_len = SEQ_LEN
  check_resume(config, path).record_start(config, ByteTokenizer())
  placed = place_model(config.model, ByteTokenizer().vocab_size, make_mesh(config.mesh.shape),
                       config.mesh.axis_rules, seed=0)  # shapes only: nothing runs eagerly
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (0.5 * rng.standard_normal(x.shape)).astype(x.dtype),
                        placed.abstract_params)
  manager = ocp.CheckpointManager(os.path.join(path, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(1, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"params": params}),
      meta=ocp.args.JsonSave({"param_shapes": param_shapes(params), "num_params": 0})))
  manager.wait_until_finished()
  manager.close()
  return path


@pytest.fixture(scope="module", params=["prefix", "continuation"])
def model(request, workdir, fast_compile):  # noqa: F811
  return adapter.BirdieJaxLM(workdir, layout=request.param, batch_size=BATCH)


@pytest.fixture(scope="module")
def reference(workdir, fast_compile):  # noqa: F811
  """score(layout, context ids, continuation ids) -> (log p of each continuation token, whether
  each is the argmax, the logits after the last input): the request laid out alone in one row, by
  models.forward, the layouts built here from their definitions rather than evals.layout."""
  run = load_run(workdir)
  tok = run.tokenizer
  begin, paradigm = (tok.special_id(special_tokens.BEGIN),
                     tok.special_id(special_tokens.PARADIGMS["prefix_lm"]))

  @jax.jit
  def forward(params, batch):
    return -token_losses(run.setup, params, batch), batch_logits(run.setup, params, batch)

  @functools.cache
  def score(layout, context, continuation):
    if layout == "prefix":  # [paradigm] + context read both ways, then BEGIN
      x = [paradigm, *context]
      ids, prefix = x + [begin] + list(continuation[:-1]), len(x)
    else:
      x, prefix = list(context), 0
      ids = [begin] + x + list(continuation[:-1])
    n, start = len(ids), len(x)
    where = np.arange(SEQ_LEN)
    batch = {"inputs": np.zeros((1, SEQ_LEN), np.int32),
             "targets": np.zeros((1, SEQ_LEN), np.int32),
             "loss_mask": ((where >= start) & (where < n)).astype(np.float32)[None],
             "segment_ids": (where < n).astype(np.int32)[None],
             "positions": np.where(where < n, where, 0).astype(np.int32)[None],
             "prefix_mask": (where < prefix)[None]}
    batch["inputs"][0, :n] = ids
    batch["targets"][0, start:n] = continuation
    with jax.set_mesh(run.setup.mesh), axis_rules(run.setup.rules):
      logp, logits = jax.device_get(forward(run.params, batch))
    span = slice(start, n)
    return (logp[0, span], np.argmax(logits[0], -1)[span] == batch["targets"][0, span],
            logits[0, n - 1])

  return lambda layout, context, continuation: score(layout, tuple(context), tuple(continuation))


def _greedy_ids(reference, layout, context, n):
  """The first `n` greedy ids after `context`, one reference forward pass each."""
  out = []
  for _ in range(n):
    *_, last = reference(layout, context, out + [0])
    out.append(int(np.argmax(last)))
  return out


def _requests(kind, args):
  return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def test_loglikelihood_is_the_forward_pass_sum_and_is_greedy_is_the_argmax(model, reference):
  tok = model.tokenizer
  pairs = [("Two plus two is", " four"), ("The sky is ", "blue"), ("", "Hello world"),
           ("x" * 80, " long context"), ("Q: 1+1?\nA:", " 2")]
  got = model.loglikelihood(_requests("loglikelihood", pairs))
  with mock.patch.object(harness_model, "_PACK_REQUESTS", 2):  # packed two requests at a time
    again = model.loglikelihood(_requests("loglikelihood", pairs))
  assert [g for _, g in again] == [g for _, g in got]
  np.testing.assert_allclose([lp for lp, _ in again], [lp for lp, _ in got], rtol=1e-5)
  for (context, continuation), (logp, greedy) in zip(pairs, got):
    # lm-eval's boundary: the context's trailing spaces belong to the continuation; the context
    # loses bytes from the left to fit seq_len.
    stripped = context.rstrip()
    ctx = tok.encode(stripped).tolist()
    cont = tok.encode(context[len(stripped):] + continuation).tolist()
    ctx = ctx[len(ctx) - min(len(ctx), SEQ_LEN - model.layout_tokens - len(cont)):]
    ref, ref_greedy, _ = reference(model.layout.kind, ctx, cont)
    assert logp == pytest.approx(float(np.sum(ref)), rel=1e-5, abs=1e-4)
    assert greedy == bool(np.all(ref_greedy)) and not greedy
  # A greedy continuation is flagged as one; one other last token is not.
  context = tok.encode("abc").tolist()
  greedy_ids = _greedy_ids(reference, model.layout.kind, context, 3)
  other = greedy_ids[:2] + [greedy_ids[2] + 1]
  (lp_greedy, is_greedy), (lp_other, not_greedy) = model.score_tokens(
      [(context, greedy_ids), (context, other)])
  assert is_greedy and not not_greedy
  assert lp_greedy > lp_other


def test_the_layouts_differ_on_a_bidirectional_model(workdir, fast_compile):  # noqa: F811
  request = _requests("loglikelihood", [("Two plus two is", " four")])
  prefix, continuation = (adapter.BirdieJaxLM(workdir, layout=kind, batch_size=BATCH)
                          .loglikelihood(request)[0][0] for kind in ("prefix", "continuation"))
  assert abs(prefix - continuation) > 1e-3


def test_generate_until_cuts_at_the_first_until_string(model, reference):
  prompt = "Once upon a time"
  ids = _greedy_ids(reference, model.layout.kind, model.tokenizer.encode(prompt).tolist(), 12)
  eos = model.tokenizer.special_id(special_tokens.EOS)
  text = model.tokenizer.decode(ids[:ids.index(eos)] if eos in ids else ids)
  kwargs = {"max_gen_toks": 12, "do_sample": False}
  full, = model.generate_until(_requests("generate_until", [(prompt, {**kwargs, "until": []})]))
  assert full == text and len(text) >= 3
  first_new = next(k for k in range(1, len(text)) if text[k] not in text[:k])
  late, early = text[-1], text[first_new]
  cut = model.generate_until(_requests("generate_until", [
      (prompt, {**kwargs, "until": [late, early]}), (prompt, {**kwargs, "until": late}),
      (prompt, {**kwargs, "until": ["never in it " * 3]})]))
  assert cut == [text[:min(first_new, text.index(late))], text[:text.index(late)], text]
  with pytest.raises(ValueError, match="greedily"):
    model.generate_until(_requests("generate_until",
                                   [(prompt, {"do_sample": True, "temperature": 0.7})]))


def test_cut_at_takes_the_earliest_stop_string():
  assert cut_at("abc\n\ndef", ["d", "\n\n"]) == "abc"
  assert cut_at("abc", ["x", ""]) == "abc"


def test_rolling_loglikelihood_scores_each_token_once(model, reference):
  tok = model.tokenizer
  short = "A short document."
  long = ("A longer page of text that the rolling windows must split: it goes on for a while "
          "about nothing much, and then, at last, it stops.")
  ids = tok.encode(long).tolist()
  windows = model.rolling_windows(ids)
  assert len(windows) >= 3
  assert sum((cont for _, cont in windows), []) == ids  # every token once, in order
  start = 0
  for ctx, cont in windows:
    assert ctx == ids[start - len(ctx):start] and cont
    assert model.layout_tokens + len(ctx) + len(cont) <= SEQ_LEN
    start += len(cont)
  assert windows[0][0] == [] and len(windows[0][1]) == SEQ_LEN - 1 - model.layout_tokens
  got = model.loglikelihood_rolling(_requests("loglikelihood_rolling", [(short,), (long,)]))
  direct = float(np.sum(reference(model.layout.kind, [], tok.encode(short).tolist())[0]))
  assert got[0] == pytest.approx(direct, rel=1e-5, abs=1e-4)
  by_window = sum(float(np.sum(reference(model.layout.kind, c, t)[0])) for c, t in windows)
  assert got[1] == pytest.approx(by_window, rel=1e-5, abs=1e-4)


def test_simple_evaluate_runs_the_toy_tasks_by_name(workdir, fast_compile):  # noqa: F811
  results = lm_eval.simple_evaluate(
      model="birdie_jax", model_args=f"workdir={workdir},layout=prefix,batch_size={BATCH}",
      tasks=["toy_choice", "toy_generate", "toy_rolling"], bootstrap_iters=0,
      task_manager=TaskManager(include_path=TASKS, include_defaults=False))
  scores = results["results"]
  model = adapter.BirdieJaxLM(workdir, layout="prefix", batch_size=BATCH)
  docs = json.loads(open(os.path.join(TASKS, "toy.json"), encoding="utf-8").read())
  right = []
  for doc in docs["choice"]:
    lls = [ll for ll, _ in model.loglikelihood(_requests(
        "loglikelihood", [(doc["question"], c) for c in doc["choices"]]))]
    right.append(int(np.argmax(lls)) == doc["answer"])
  assert scores["toy_choice"]["acc,none"] == pytest.approx(np.mean(right))
  texts = [d["text"] for d in docs["rolling"]]
  lls = model.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]))
  words = sum(len(t.split()) for t in texts)  # lm-eval's word count (re.split on whitespace)
  assert scores["toy_rolling"]["word_perplexity,none"] == pytest.approx(
      math.exp(-sum(lls) / words), rel=1e-4)
  assert 0.0 <= scores["toy_generate"]["exact_match,none"] <= 1.0
  assert results["config"]["model"] == "birdie_jax" and results["config"]["step"] == 1


def _main(*args):
  argv = ["birdie_jax.lm_eval", *args]
  with flags_of(adapter.define_flags), mock.patch.object(sys, "argv", argv):
    adapter.main(cli.flags_parser("birdie_jax.lm_eval")(argv))


def test_cli_writes_the_results(workdir, tmp_path, capsys, fast_compile):  # noqa: F811
  output = tmp_path / "results.json"
  _main(f"--workdir={workdir}", "--tasks=toy_choice", f"--include_path={TASKS}", "--limit=2",
        f"--batch_size={BATCH}", "--layout=continuation", f"--output={output}")
  stored = json.loads(output.read_text(encoding="utf-8"))
  assert stored["config"]["layout"] == "continuation"
  assert stored["n-samples"]["toy_choice"]["effective"] == 2
  assert 0.0 <= stored["results"]["toy_choice"]["acc,none"] <= 1.0
  assert "toy_choice" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--workdir={tmp}", "--tasks=toy_choice"], "is --workdir a training run?"),
    (["--workdir={run}", "--tasks=toy_choice", "--layout=sideways"], "--layout"),
    (["--workdir={run}", "--tasks=toy_choise"], "unknown lm-eval task 'toy_choise'"),
    (["--workdir={run}", "--tasks=toy_choice", "--include_path={tmp}/none"], "is not a folder"),
])
def test_cli_stops_in_one_line(args, message, workdir, tmp_path, capsys, monkeypatch):
  # lm-eval's own tasks take ~10 s to index: the fallback lookup reads --include_path only.
  monkeypatch.setattr(adapter, "TaskManager",
                      functools.partial(TaskManager, include_defaults=False))
  monkeypatch.setattr(adapter, "load_run", lambda *a, **k: pytest.fail("read the checkpoint"))
  args = [a.format(run=workdir, tmp=tmp_path) for a in args]
  if not any(a.startswith("--include_path") for a in args):
    args.append(f"--include_path={TASKS}")
  with pytest.raises(SystemExit) as exited:
    _main(*args)
  lines = capsys.readouterr().err.strip().splitlines()
  assert exited.value.code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("birdie_jax.lm_eval: error: ") and message in lines[0], lines


def test_the_adapter_imports_the_pypi_lm_eval_and_registers_beside_its_models():
  assert adapter.lm_eval is lm_eval and adapter.lm_eval.__name__ == "lm_eval"
  assert lm_eval.api.registry.get_model("birdie_jax") is adapter.BirdieJaxLM
  assert lm_eval.api.registry.get_model("dummy").__name__ == "DummyLM"  # lm-eval's own remain
