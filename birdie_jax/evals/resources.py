"""Text the evaluations are built from, all shipped in the package (nothing downloads).

Names: the most frequent US Census 1990 first and last names (`names/README.md`). Prose: Milton's
Areopagitica, Paradise Lost, Paradise Regained and the L'Allegro / Il Penseroso / Comus / Lycidas
volume from the embedded Milton corpus (`birdie_jax/data/corpus/milton.jsonl.xz`; its other
volumes carry editors' notes and numbered footnotes), which the default runs never train on (they
train on Shakespeare): passages for perplexity and passage QA, clean sentences for story infilling.
"""
from __future__ import annotations

import functools
import importlib.resources
import re

from birdie_jax.data import embedded_corpus

PROSE = "milton"  # the embedded corpus held out for evaluation
PROSE_WORKS = ("areopagitica", "paradise_lost_(no_introduction)", "paradise_regained",
               "lallegro_il_penseroso_comus_and_lycidas")
_LINE_NUMBER = re.compile(r"[ \t]+\d+[ \t]*$", re.MULTILINE)  # verse line numbers at line ends
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLEAN_SENTENCE = re.compile(r"[A-Z][A-Za-z ,;:'!?.-]*[.!?]")
_MIN_WORDS = 4


def _read_names(name: str) -> tuple[str, ...]:
  resource = importlib.resources.files("birdie_jax.evals") / "names" / name
  return tuple(resource.read_text(encoding="utf-8").split())


@functools.cache
def first_names() -> tuple[str, ...]:
  """About 1,000 first names, the most frequent male and female ones interleaved."""
  return _read_names("first_names.txt")


@functools.cache
def last_names() -> tuple[str, ...]:
  """The 2,000 most frequent last names."""
  return _read_names("last_names.txt")


@functools.cache
def prose_passages() -> tuple[str, ...]:
  """The held-out prose as passages of about 4,000-8,000 characters, verse line numbers removed."""
  works = dict(embedded_corpus.read_works(PROSE))
  return tuple(p for title in PROSE_WORKS
               for p in embedded_corpus.split_passages(_LINE_NUMBER.sub("", works[title])))


def split_sentences(text: str) -> list[str]:
  """`text` cut after each '.', '!' or '?', with its whitespace (newlines too) collapsed."""
  return [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s.strip()]


def is_clean_sentence(sentence: str) -> bool:
  """A plain sentence: capitalised, letters and punctuation only, at least four words."""
  return (_CLEAN_SENTENCE.fullmatch(sentence) is not None
          and len(sentence.split()) >= _MIN_WORDS)


@functools.cache
def passage_sentences() -> tuple[tuple[str, ...], ...]:
  """For each prose passage, its sentences in order (clean or not: runs are checked by users)."""
  return tuple(tuple(split_sentences(p)) for p in prose_passages())
