"""A tiny instruction set built from the embedded Shakespeare, for tests, demos and the notebook.

    python -m birdie_jax.data.instructions --out=workdirs/tiny_instructions.jsonl [--count=400]

writes `count` records (`data/sft_records.py`'s format), the same ones for the same `--seed`,
made from short verse lines (3 to 7 words, at most 36 characters) of the shipped corpus, the kinds
taking turns:
    repeat     "Repeat this sentence: {line}"                  -> the line
    reverse    "Reverse the word order: {line}"                -> its words backwards
    next word  "What word comes after "{w}" in: {line}"         -> the word after w (w unique)
    continue   "Continue the passage: {line}"                  -> the verse line that follows
and every tenth record is a chat of two turns (system, repeat, then "Now reverse the word
order." -> the reversal), so both record kinds and multi-turn targets are exercised. Answers are
a few words, so with a byte tokenizer every example fits 256 positions (a chat is the longest).
"""
from __future__ import annotations

import functools
import json
import re

import numpy as np

from birdie_jax import cli
from birdie_jax.data.embedded_corpus import passages

MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 7, 36
SYSTEM = "Answer briefly."
_SPEAKER = re.compile(r"^[A-Z][A-Z .'-]*\.$")  # "KING.", "FIRST LORD."
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z,;:'!?.-]*( [A-Za-z,;:'!?.-]+)*$")  # one space between words
_CAPS = re.compile(r"[A-Z]{2}")  # a name in capitals: a speaker or the list of persons


def _usable(line: str) -> bool:
  words = line.split()
  return (MIN_WORDS <= len(words) <= MAX_WORDS and len(line) <= MAX_CHARS
          and bool(_PLAIN.match(line)) and not _SPEAKER.match(line) and not _CAPS.search(line))


@functools.cache
def verse_pairs() -> tuple[tuple[str, str], ...]:
  """(line, the line after it) for consecutive usable lines of one speech, corpus order."""
  pairs = []
  for passage in passages():
    lines = [line.strip() for line in passage.splitlines()]
    pairs += [(a, b) for a, b in zip(lines, lines[1:]) if _usable(a) and _usable(b)]
  return tuple(pairs)


def _record(kind: int, line: str, after: str, rng: np.random.Generator) -> dict:
  words = line.split()
  backwards = " ".join(reversed(words))
  if kind == 0:
    return {"prompt": f"Repeat this sentence: {line}", "response": line}
  if kind == 1:
    return {"prompt": f"Reverse the word order: {line}", "response": backwards}
  if kind == 2:
    unique = [i for i, w in enumerate(words[:-1]) if words.count(w) == 1]
    i = int(rng.choice(unique)) if unique else 0
    return {"prompt": f"What word comes after \"{words[i]}\" in: {line}", "response": words[i + 1]}
  return {"prompt": f"Continue the passage: {line}", "response": after}


def tiny_instructions(count: int = 400, seed: int = 0) -> list[dict]:
  """`count` records (see the module docstring), a pure function of `count` and `seed`."""
  pairs = verse_pairs()
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(pairs), size=count, replace=count > len(pairs))
  records = []
  for n, pick in enumerate(picks):
    line, after = pairs[pick]
    if n % 10 == 9:
      records.append({"messages": [
          {"role": "system", "content": SYSTEM},
          {"role": "user", "content": f"Repeat this sentence: {line}"},
          {"role": "assistant", "content": line},
          {"role": "user", "content": "Now reverse the word order."},
          {"role": "assistant", "content": " ".join(reversed(line.split()))}]})
    else:
      records.append(_record(n % 4, line, after, rng))
  return records


def write_jsonl(records: list[dict], path: str) -> None:
  """Writes one JSON object per line."""
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv: list[str] | None = None) -> None:
  parser = cli.ArgumentParser(prog="python -m birdie_jax.data.instructions",
                              description="Write the tiny instruction set as JSON lines.")
  parser.add_argument("--out", required=True, help="the .jsonl file to write")
  parser.add_argument("--count", type=cli.positive_int, default=400, help="number of records")
  parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="which records")
  args = parser.parse_args(argv)
  try:
    write_jsonl(tiny_instructions(args.count, args.seed), args.out)
  except OSError as e:
    cli.fail(parser.prog.removeprefix("python -m "), f"cannot write {args.out} ({e.strerror})")
  print(f"wrote {args.count} records to {args.out}")


if __name__ == "__main__":
  main()
