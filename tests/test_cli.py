"""The command-line tools' shared error line."""
import pytest

from birdie_jax import cli
from birdie_jax.errors import ConfigError, TrainingError


@pytest.mark.parametrize("error, line", [
    (KeyError("no such key"), "no such key"),  # KeyError's own quotes go
    (ValueError("must be one of ('a', 'b'), got 'c'"), "must be one of ('a', 'b'), got 'c'"),
    ("two\nlines  and\\n an escaped one", "two lines and an escaped one"),
    ("loading failed: Traceback (most recent call last):\n  File x\nSyntaxError: bad",
     "loading failed: SyntaxError: bad"),
])
def test_one_line(error, line):
  assert cli.one_line(error) == line


def test_fail_prints_one_line_and_exits_2(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.fail("prog", ValueError("bad\nvalue"))
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "prog: error: bad value\n"


@pytest.mark.parametrize("error", [ConfigError("bad\nflag"), TrainingError("bad\nflag")])
def test_user_errors_end_in_one_line(error, capsys):
  with pytest.raises(SystemExit) as exit_info, cli.user_errors("prog"):
    raise error
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "prog: error: bad flag\n"


def test_user_errors_pass_other_exceptions_and_ctrl_c_through():
  with pytest.raises(RuntimeError), cli.user_errors("prog"):
    raise RuntimeError("a bug keeps its traceback")
  with pytest.raises(KeyboardInterrupt), cli.user_errors("prog"):
    raise KeyboardInterrupt


def test_ctrl_c_before_training_exits_130_with_its_line(capsys):
  with pytest.raises(SystemExit) as exit_info, cli.user_errors("prog", interrupted="stopped"):
    raise KeyboardInterrupt
  assert exit_info.value.code == 130
  assert capsys.readouterr().err == "prog: stopped\n"


def test_leftover_words_and_a_missing_config_end_in_one_line(capsys, monkeypatch):
  cli.no_arguments("prog", ["prog"])  # nothing left over: no exit
  with pytest.raises(SystemExit) as exit_info:
    cli.no_arguments("prog", ["prog", "stray"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "prog: error: unexpected arguments: ['stray']\n"
  monkeypatch.setattr(cli, "config_flag", lambda program, name: None)
  with pytest.raises(SystemExit):
    cli.required_config("prog", "--config=configs/base.py")
  assert capsys.readouterr().err == ("prog: error: --config is required, e.g. "
                                     "--config=configs/base.py\n")
