"""What the command-line tools share: a user error (a bad flag, config file, override or input)
ends in one line on stderr, `<program>: error: <message>`, with exit status 2, not a traceback.

absl programs parse through `flags_parser` (bad values of bounded flags, `lower_bound=`, end
there); argparse programs (the benchmarks) use `ArgumentParser` with the `positive_int`-style
types below. Checks that need more than one flag raise `ConfigError` through `require`, before
any work, so a typo costs seconds rather than a compile or a trained tokenizer.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
import contextlib
import math
import sys
from typing import NoReturn

from absl import flags
from absl import logging
import ml_collections

from birdie_jax.errors import ConfigError, TrainingError

# linear_scan's implementations (model.scan_impl), for the benchmarks' lists of them.
SCAN_IMPLS = ("auto", "associative", "linear", "chunked", "pallas")

# `user_errors(interrupted=...)` of the training entry points: Ctrl-C before their loop began (the
# loop itself saves and exits 0).
BEFORE_TRAINING = "interrupted before training began; nothing to save"

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


def no_arguments(program: str, argv: list[str]) -> None:
  """Ends in one line when words are left after absl parsed the flags (a flag without its `--`,
  a value after a space instead of `=`): absl would otherwise ignore them."""
  if len(argv) > 1:
    fail(program, f"unexpected arguments: {list(argv[1:])}")


@contextlib.contextmanager
def user_errors(program: str, *, interrupted: str | None = None) -> Iterator[None]:
  """Inside it, a ConfigError or TrainingError ends in one line (`fail`, exit status 2). With
  `interrupted`, Ctrl-C ends with `<program>: <interrupted>` and exit status 130 (for what runs
  before a training loop, which itself saves and exits 0 on Ctrl-C); without, it propagates."""
  try:
    yield
  except (ConfigError, TrainingError) as e:
    fail(program, e)
  except KeyboardInterrupt:
    if interrupted is None:
      raise
    print(f"{program}: {interrupted}", file=sys.stderr)
    sys.exit(130)


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


def required_config(program: str, example: str, name: str = "config") -> ml_collections.ConfigDict:
  """`config_flag`'s value; its absence ends in one line naming `example` (a `--config=...`)."""
  config = config_flag(program, name)
  if config is None:
    fail(program, f"--{name} is required, e.g. {example}")
  return config


def quiet_logging() -> None:
  """Library INFO chatter (Orbax, Grain) at WARNING unless `--verbosity` was given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def require(condition: bool, message: str) -> None:
  """Raises ConfigError(message) unless `condition`: a flag check in one line."""
  if not condition:
    raise ConfigError(message)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors (unknown flags, bad values) end in one line and exit status 2, as the
  absl programs' do, rather than a usage block followed by the error."""

  def error(self, message: str) -> NoReturn:
    fail(self.prog.removeprefix("python -m "), message)


def _number(text: str, kind: type, what: str, ok: Callable[[float], bool]):
  """`text` as `kind`, if `ok` holds for it; else argparse's one-line type error naming `what`."""
  try:
    value = kind(text)
  except ValueError:
    value = None
  if value is None or not math.isfinite(value) or not ok(value):
    raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
  return value


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  return _number(text, int, "a positive integer", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  return _number(text, float, "a positive number", lambda v: v > 0)


def positive_ints(text: str) -> list[int]:
  """argparse type: a comma-separated list of positive integers, e.g. 1024,4096."""
  parts = [p.strip() for p in text.split(",") if p.strip()]
  if not parts:
    raise argparse.ArgumentTypeError(f"must list positive integers, e.g. 1024,4096, got {text!r}")
  return [positive_int(p) for p in parts]


def choices_list(*choices: str) -> Callable[[str], list[str]]:
  """argparse type: a comma-separated, non-empty list drawn from `choices`."""

  def parse(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in choices]
    if bad or not parts:
      raise argparse.ArgumentTypeError(f"must list some of {', '.join(choices)}, got {text!r}")
    return parts

  return parse


def shapes(text: str) -> list[tuple[int, ...]]:
  """argparse type: comma-separated array shapes of positive sizes, e.g. 8x2048x2048,8x512x64."""
  try:
    out = [tuple(int(n) for n in spec.split("x")) for spec in text.split(",") if spec.strip()]
  except ValueError:
    out = []
  if not out or any(len(s) != 3 or min(s) < 1 for s in out):
    raise argparse.ArgumentTypeError(f"must list BxLxD shapes of positive sizes, e.g. "
                                     f"8x2048x2048, got {text!r}")
  return out
