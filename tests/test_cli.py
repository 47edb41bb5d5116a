"""The command-line tools' shared error line."""
import pytest

from birdie_jax import cli


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
