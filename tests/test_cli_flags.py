"""Every command-line tool checks its flags at the start: a bad value is one `<program>: error:`
line on stderr and exit status 2, before a checkpoint is read or anything compiles; a workdir that
cannot be written stops at the start; evaluate writes each task's result the moment it is done.

Most cases call the program's own `main` in-process, its flags parsed as its `__main__` parses them
(`cli.flags_parser`); two run the real command in a subprocess (about 5 s each)."""
import contextlib
import errno
import importlib
import os
import subprocess
import sys
import time
import types
from unittest import mock

from absl import flags
from etils import epath
import numpy as np
import pytest

from birdie_jax import aot, cli, evaluate, generate
from birdie_jax.bench import __main__ as bench
from birdie_jax.config import validate_config
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals import runner
from birdie_jax.evals.report import read_task
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.trained_run import TrainedRun
from birdie_jax.workdir import check_writable
from helpers import ROOT, flags_of, subprocess_env, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)


def _run(program, define, main, args, capsys):
  """(exit status, stderr lines) of `main` on `args`, parsed as `program`'s command line."""
  argv = [program, *args]
  # config_flags reads `--config.key=value` overrides from sys.argv, as under app.run.
  with flags_of(define), mock.patch.object(sys, "argv", argv), \
       pytest.raises(SystemExit) as exited:
    main(cli.flags_parser(program)(argv))
  return exited.value.code, capsys.readouterr().err.strip().splitlines()


def _assert_one_line(code, lines, program, message):
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"{program}: error: ") and message in lines[0], lines


@pytest.fixture(name="no_loading")
def _no_loading(monkeypatch):
  """Fails the test if a program reads a checkpoint before rejecting its flags."""

  def forbidden(*args, **kwargs):
    raise AssertionError("read the run before rejecting a flag")

  monkeypatch.setattr(generate, "load_run", forbidden)
  monkeypatch.setattr(evaluate, "load_run", forbidden)


@pytest.fixture(name="run_dir")
def _run_dir(tmp_path):
  """A workdir with the tiny run's config.json (no checkpoint: nothing gets that far)."""
  (tmp_path / "config.json").write_text(tiny_config().to_json(), encoding="utf-8")
  return tmp_path


# generate

@pytest.mark.parametrize("flag, message", [
    ("--max_new_tokens=0", "flag --max_new_tokens=0: 0 is not a positive integer"),
    ("--temperature=-1", "flag --temperature=-1: -1.0 is not a non-negative number"),
    ("--temperature=nan", "--temperature must be a number >= 0 (0: greedy), got nan"),
    ("--top_k=-3", "flag --top_k=-3: -3 is not a non-negative integer"),
    ("--seed=-1", "flag --seed=-1: -1 is not a non-negative integer"),
    ("--layout=sideways", "flag --layout=sideways: value should be one of <prefix|continuation>"),
    ("--prompt=caf\udce9", "--prompt is not valid UTF-8 (at character 3)"),
])
def test_generate_rejects_a_bad_flag_before_reading_the_run(flag, message, run_dir, no_loading,
                                                            capsys):
  code, lines = _run("birdie_jax.generate", generate.define_flags, generate.main,
                     [f"--workdir={run_dir}", flag], capsys)
  _assert_one_line(code, lines, "birdie_jax.generate", message)


def test_generate_top_k_is_checked_against_the_runs_vocabulary(run_dir, monkeypatch, capsys):
  vocab = ByteTokenizer().vocab_size
  # The run as load_run returns it, without a model: decoding it would fail loudly.
  monkeypatch.setattr(generate, "load_run", lambda *a, **k: types.SimpleNamespace(
      tokenizer=ByteTokenizer(), setup=None, params=None))
  code, lines = _run("birdie_jax.generate", generate.define_flags, generate.main,
                     [f"--workdir={run_dir}", f"--top_k={vocab + 1}"], capsys)
  _assert_one_line(code, lines, "birdie_jax.generate",
                   f"--top_k ({vocab + 1}) exceeds the run's vocabulary of {vocab} ids")


# evaluate

@pytest.mark.parametrize("args, message", [
    (["--examples=-1"], "flag --examples=-1: -1 is not a non-negative integer"),
    (["--seq_len=-8"], "flag --seq_len=-8: -8 is not a non-negative integer"),
    (["--tasks=mqar,phonebok"], "unknown eval task 'phonebok'"),
    (["stray"], "unexpected arguments: ['stray']"),
])
def test_evaluate_rejects_a_bad_flag_before_reading_the_run(args, message, run_dir, no_loading,
                                                            capsys):
  code, lines = _run("birdie_jax.evaluate", evaluate.define_flags, evaluate.main,
                     [f"--workdir={run_dir}", *args], capsys)
  _assert_one_line(code, lines, "birdie_jax.evaluate", message)
  assert sorted(os.listdir(run_dir)) == ["config.json"]


def test_evaluate_on_an_unwritable_workdir_stops_at_once(no_loading, capsys):
  # /proc/self is a folder nobody can create files in, root included (as a read-only mount).
  start = time.perf_counter()
  code, lines = _run("birdie_jax.evaluate", evaluate.define_flags, evaluate.main,
                     ["--workdir=/proc/self", "--config=configs/base.py:tiny"], capsys)
  _assert_one_line(code, lines, "birdie_jax.evaluate",
                   "cannot write into workdir /proc/self (")
  assert lines[0].endswith("; evaluate writes its reports there")
  assert time.perf_counter() - start < 5  # no tokenizer, checkpoint or compile
  assert not any(name.startswith(".write-probe") for name in os.listdir("/proc/self"))


@pytest.mark.usefixtures("fast_compile")
def test_evaluate_writes_each_task_when_it_is_done(tmp_path, monkeypatch):
  config = tiny_config()
  config.eval.update(tasks="mqar,perplexity", examples=1, seq_len=128)
  tokenizer = ByteTokenizer()
  setup = make_train_setup(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  run = TrainedRun(config=config, tokenizer=tokenizer, setup=setup, step=3,
                   params=init_train_state(config, setup, tokenizer.vocab_size).params)
  real = runner.Evaluator._run_task

  def second_task_fails(self, params, task):
    if task.name == "perplexity":
      raise RuntimeError("the host went away")
    return real(self, params, task)

  monkeypatch.setattr(runner.Evaluator, "_run_task", second_task_fails)
  with pytest.raises(RuntimeError, match="the host went away"):
    evaluate.evaluate_run(str(tmp_path), run=run)
  folder = tmp_path / "eval"
  assert sorted(os.listdir(folder)) == ["3-mqar.json", "3-mqar.png"]  # no summary, no temporaries
  mqar = read_task(str(folder / "3-mqar.json"))
  assert mqar.name == "mqar" and mqar.rows and set(mqar.overall) == set(mqar.metrics)
  assert all(row["examples"] == 1 and np.isfinite(row[mqar.main_metric]) for row in mqar.rows)


# aot and the benchmarks

@pytest.mark.parametrize("args, message", [
    (["--topology=v9:2x2"], "a TPU topology looks like v5e:16x16"),
    (["--assumed_mfu=0"], "--assumed_mfu must be in (0, 1], got 0"),
    (["--json=/proc/self/aot.jsonl"], "cannot write into workdir /proc/self ("),
    (["--config.model.mlp_expansion=0.001"], "model.mlp_expansion (0.001) x model.width (32) "
     "gives an MLP of width 0"),
])
def test_aot_rejects_a_bad_flag_before_compiling(args, message, capsys):
  code, lines = _run("birdie_jax.aot", aot.define_flags, aot.main,
                     ["--config=configs/base.py:tiny", *args], capsys)
  _assert_one_line(code, lines, "birdie_jax.aot", message)


def test_aot_without_libtpu_says_what_is_missing(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` fails, as when not installed
  monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
  code, lines = _run("birdie_jax.aot", aot.define_flags, aot.main,
                     ["--config=configs/base.py:tiny"], capsys)
  _assert_one_line(code, lines, "birdie_jax.aot", "needs libtpu, which is not installed: pip "
                   "install -r requirements-aot.txt")


@pytest.mark.parametrize("argv, program, message", [
    (["bogus"], "birdie_jax.bench", "unknown subcommand 'bogus'; the subcommands are objectives"),
    (["train", "--batch=0"], "birdie_jax.bench train",
     "argument --batch: must be a positive integer, got '0'"),
    (["train", "--models=hawk:2b"], "birdie_jax.bench train", "'hawk:2b' is not family:preset"),
    (["train", "--remat=some"], "birdie_jax.bench train", "argument --remat: must list some of"),
    (["decode", "--prompt_lens=1024,x"], "birdie_jax.bench decode",
     "argument --prompt_lens: must be a positive integer, got 'x'"),
    (["scan", "--shapes=8x8"], "birdie_jax.bench scan", "argument --shapes: must list BxLxD"),
    (["scan", "--impls=fast"], "birdie_jax.bench scan", "argument --impls: must list some of"),
    (["scan", "--autotune"], "birdie_jax.bench scan", "--autotune tunes GPU tilings: run it on a"),
    (["controller", "--repeats=-1"], "birdie_jax.bench controller",
     "argument --repeats: must be a positive integer"),
    (["objectives", "--seconds=nan"], "birdie_jax.bench objectives",
     "argument --seconds: must be a positive number, got 'nan'"),
    (["soak", "--every=0"], "birdie_jax.bench soak", "argument --every: must be a positive"),
    (["tpu_aot", "--topology=v9:1x1"], "birdie_jax.bench tpu_aot", "a TPU topology looks like"),
])
def test_bench_rejects_a_bad_flag_before_measuring(argv, program, message, capsys):
  with pytest.raises(SystemExit) as exited:
    bench.main(argv)
  _assert_one_line(exited.value.code, capsys.readouterr().err.strip().splitlines(), program,
                   message)


# the experiments

def _experiment(module):
  """(define_flags, main) of an experiments module."""
  module = importlib.import_module(module)
  return module.define_flags, module.main


@pytest.mark.parametrize("module, args, message", [
    ("experiments.phonebook_finetune", ["--workdir={file}"], "(Not a directory)"),
    ("experiments.phonebook_probe", ["--steps=0"], "flag --steps=0: 0 is not a positive integer"),
    ("experiments.phonebook_probe", ["--learning_rate=0", "--workdir={tmp}"],
     "--learning_rate must be positive, got 0"),
    ("experiments.reproduce_paper", ["--arms=hawk_ntp,hawk_nope", "--workdir={tmp}"],
     "unknown arm 'hawk_nope'"),
    ("experiments.reproduce_paper", ["--budget_s=0", "--workdir={tmp}"],
     "--budget_s must be positive, got 0"),
    ("experiments.study.finetune", ["--workdir={tmp}", "--task=copying"],
     "flag --task=copying: value should be one of <phonebook|mqar>"),
    ("experiments.study.heldout", ["--workdir={tmp}", "--batches=0"],
     "flag --batches=0: 0 is not a positive integer"),
    ("experiments.study.results", ["--root={tmp}/none"], "--root={tmp}/none is not a folder"),
])
def test_experiments_reject_a_bad_flag_in_one_line(module, args, message, tmp_path, capsys):
  (tmp_path / "file").write_text("not a folder")
  fill = {"tmp": tmp_path / "run", "file": tmp_path / "file"}
  args = [a.format(**fill) for a in args]
  code, lines = _run(module, *_experiment(module), args, capsys)
  _assert_one_line(code, lines, module, message.format(**fill))
  assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing made


def test_study_tokenizer_rejects_an_unknown_flag(capsys):
  from experiments.study import tokenizer  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exited:
    tokenizer.main(["--cont"])
  _assert_one_line(exited.value.code, capsys.readouterr().err.strip().splitlines(),
                   "experiments.study.tokenizer", "unexpected arguments ['--cont']")


@contextlib.contextmanager
def _imported(name):
  """(define, main) of a program that defines its flags on import: imported afresh for one test."""
  sys.modules.pop(name, None)
  try:
    yield (lambda: importlib.import_module(name)), (lambda argv: sys.modules[name].main(argv))
  finally:
    sys.modules.pop(name, None)


def test_lab_on_a_file_as_workdir(tmp_path, capsys):
  file = tmp_path / "file"
  file.write_text("not a folder")
  with _imported("birdie_jax.lab.__main__") as program:
    code, lines = _run("birdie_jax.lab", *program,
                       ["--config=configs/lab.py:cpu", f"--workdir={file}"], capsys)
  _assert_one_line(code, lines, "birdie_jax.lab", f"workdir {file} is a file, not a folder")
  assert file.read_text() == "not a folder"


def test_main_on_an_mlp_of_width_zero(tmp_path, capsys):
  with _imported("birdie_jax.main") as program:
    code, lines = _run("birdie_jax", *program, ["--config=configs/base.py:tiny",
                                                f"--workdir={tmp_path}/run",
                                                "--config.model.mlp_expansion=0.001"], capsys)
  _assert_one_line(code, lines, "birdie_jax", "model.mlp_expansion (0.001) x model.width (32) "
                   "gives an MLP of width 0: it must be at least 1")
  assert not os.path.exists(tmp_path / "run")


def test_main_init_from_a_folder_that_is_no_recurrentgemma_checkpoint(tmp_path, capsys):
  """--init_from (train.init_from) is checked before the data, tokenizer or model are built; the
  flag and the config key may not disagree."""
  (tmp_path / "ckpt").mkdir()
  with _imported("birdie_jax.main") as program:
    code, lines = _run("birdie_jax", *program, ["--config=configs/base.py:tiny",
                                                f"--workdir={tmp_path}/run",
                                                f"--init_from={tmp_path}/ckpt"], capsys)
  _assert_one_line(code, lines, "birdie_jax", f"train.init_from {tmp_path}/ckpt is not a "
                   "RecurrentGemma checkpoint directory (the Orbax params that "
                   "recurrentgemma.jax.load_parameters reads)")
  assert not (tmp_path / "run" / "tokenizer").exists()
  with _imported("birdie_jax.main") as program:
    code, lines = _run("birdie_jax", *program, ["--config=configs/base.py:tiny",
                                                f"--workdir={tmp_path}/run", "--init_from=a",
                                                "--config.train.init_from=b"], capsys)
  _assert_one_line(code, lines, "birdie_jax", "--init_from=a and --config.train.init_from=b "
                   "differ: give one")


# the workdir check and degenerate model sizes

def test_check_writable(tmp_path, monkeypatch):
  file = tmp_path / "file"
  file.write_text("x")
  for path, message in ((file, f"workdir {file} is a file, not a folder"),
                        (file / "run", f"cannot write into workdir {file}/run (Not a directory)")):
    with pytest.raises(ConfigError) as raised:
      check_writable(path)
    assert str(raised.value) == message
  check_writable(tmp_path / "new" / "run")  # made, and left empty
  assert os.listdir(tmp_path / "new" / "run") == []

  def read_only(self, data):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))

  monkeypatch.setattr(epath.Path, "write_bytes", read_only)
  with pytest.raises(ConfigError) as raised:
    check_writable(tmp_path, hint="pass another folder")
  assert str(raised.value) == (f"cannot write into workdir {tmp_path} (Read-only file system); "
                               "pass another folder")


def test_an_mlp_of_width_zero_is_one_line():
  config = tiny_config()
  config.model.mlp_expansion = 0.001
  with pytest.raises(ConfigError) as raised:
    validate_config(config)
  assert str(raised.value) == ("model.mlp_expansion (0.001) x model.width (32) gives an MLP of "
                               "width 0: it must be at least 1")
  config.model.family = "gated_ssm"  # no MLP: any expansion is fine
  validate_config(config)


def _command(*args):
  result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=subprocess_env(PYTHONPATH=str(ROOT)))
  return result.returncode, result.stderr.strip().splitlines()


def test_real_commands_print_one_line(tmp_path):
  file = tmp_path / "workdir"
  file.write_text("a file where the run's folder should be")
  code, lines = _command("birdie_jax.main", "--config=configs/base.py:tiny", f"--workdir={file}")
  _assert_one_line(code, lines, "birdie_jax", f"workdir {file} is a file, not a folder")
  assert file.read_text() == "a file where the run's folder should be"
  code, lines = _command("birdie_jax.generate", f"--workdir={tmp_path}", "--temperature=-1")
  _assert_one_line(code, lines, "birdie_jax.generate", "-1.0 is not a non-negative number")
