"""The corpora shipped inside the package (Shakespeare for training, Milton for evaluation)."""
from __future__ import annotations

import functools
import importlib.resources
import json
import lzma
import re

PASSAGE_MIN_CHARS = 4_000  # a passage closes at the first blank line after this many characters
_SHORT_TAIL_CHARS = 2_000  # a shorter last passage of a work is merged into the one before
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")


def read_works(name: str = "shakespeare") -> list[tuple[str, str]]:
  """(title, text) of every work in `corpus/<name>.jsonl.xz`."""
  resource = importlib.resources.files("birdie_jax.data") / "corpus" / f"{name}.jsonl.xz"
  with resource.open("rb") as f, lzma.open(f, "rt", encoding="utf-8") as lines:
    return [(work["title"], work["text"]) for work in map(json.loads, lines)]


def split_passages(text: str) -> list[str]:
  """Cuts a work at blank lines into passages of roughly 4,000-8,000 characters."""
  passages, start = [], 0
  for boundary in _BLANK_LINE.finditer(text):
    if boundary.end() - start >= PASSAGE_MIN_CHARS:
      passages.append(text[start:boundary.end()])
      start = boundary.end()
  tail = text[start:]
  if passages and len(tail) < _SHORT_TAIL_CHARS:
    passages[-1] += tail
  elif tail.strip():
    passages.append(tail)
  return passages


@functools.cache
def passages(name: str = "shakespeare") -> tuple[str, ...]:
  """All passages of the embedded corpus `name`, work by work, in a fixed order."""
  return tuple(p for _, text in read_works(name) for p in split_passages(text))
