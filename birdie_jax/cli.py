"""What the command-line tools share: a user error (a bad flag, config file, override or input)
ends in one line on stderr, `<program>: error: <message>`, with exit status 2, not a traceback."""
from __future__ import annotations

from collections.abc import Callable
import sys
from typing import NoReturn

from absl import flags
from absl import logging
import ml_collections

# What loading a config file or applying a `--config.key=value` override raises when it is wrong.
CONFIG_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError)


def one_line(error: BaseException | str) -> str:
  """The message on one line; an embedded traceback is reduced to its last line, and the quotes
  a KeyError puts around its message are dropped."""
  text = str(error)
  if "Traceback (most recent call last)" in text:
    head, _, tail = text.partition("Traceback (most recent call last)")
    text = head + tail.strip().splitlines()[-1]
  text = " ".join(text.replace("\\n", " ").replace("\\'", "").split())
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]
  return text


def fail(program: str, message: BaseException | str) -> NoReturn:
  """Prints `<program>: error: <message>` on one line to stderr and exits with status 2."""
  print(f"{program}: error: {one_line(message)}", file=sys.stderr)
  sys.exit(2)


def flags_parser(program: str) -> Callable[[list[str]], list[str]]:
  """A parser for `app.run(main, flags_parser=...)` under which bad flags, config files and
  overrides end in one line."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(program, e)
    except CONFIG_ERRORS as e:
      fail(program, f"bad --config or override ({type(e).__name__}): {one_line(e)}")

  return parse


def config_flag(program: str, name: str = "config") -> ml_collections.ConfigDict | None:
  """The value of the config-file flag `name` (None if not given); a file that fails to load,
  which `config_flags` reports only on first use, ends in one line."""
  try:
    config = flags.FLAGS[name].value
    if config is not None:
      config.keys()
  except CONFIG_ERRORS as e:
    fail(program, f"bad --{name} ({type(e).__name__}): {one_line(e)}")
  return config


def quiet_logging() -> None:
  """Library INFO chatter (Orbax, Grain) at WARNING unless `--verbosity` was given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
