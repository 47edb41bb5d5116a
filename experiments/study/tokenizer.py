"""The study's one tokenizer, and the token counts of the corpus files under it.

    python -m experiments.study.tokenizer            # (re)builds MODEL_PATH (about a minute)
    python -m experiments.study.tokenizer --count    # also counts each file's tokens

Every arm of the study reads MODEL_PATH (`data.tokenizer.model_path` in `config.py`), so all arms
share one vocabulary and their perplexities compare. It is the model the training loop itself
would train on first use (`data.tokenizer.train_sentencepiece`: a BPE on a 3M-character sample of
the training documents): here of shard 0's training split at the study's `val_fraction`, copied
out of the cache into this folder and committed (a GPU call receives it with the working tree).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

from birdie_jax import cli
from birdie_jax.data.file_source import open_files
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import SentencePieceTokenizer, train_sentencepiece
from birdie_jax.workdir import check_writable

MODEL_PATH = os.path.join("experiments", "study", "tokenizer", "gutenberg-16k.model")
VOCAB_SIZE = 16_384
VAL_FRACTION = 0.02  # the study configs' data.val_fraction (books held out of shard 0)
TOKENIZER_SOURCE = "../shared/corpus/gutenberg_train_0.jsonl.zst"


def build(source: str = TOKENIZER_SOURCE, path: str = MODEL_PATH) -> SentencePieceTokenizer:
  """Trains the BPE on `source`'s training split and writes it to `path`."""
  documents = load_documents(source, "train", val_fraction=VAL_FRACTION, text_field="text")
  with tempfile.TemporaryDirectory() as cache:
    train_sentencepiece(documents, vocab_size=VOCAB_SIZE, cache_dir=cache)
    (trained,) = os.listdir(os.path.join(cache, "tokenizer"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(os.path.join(cache, "tokenizer", trained), path)
  return SentencePieceTokenizer.load(path)


def count_tokens(tokenizer: SentencePieceTokenizer, source: str) -> tuple[int, int]:
  """(documents, tokens) of every document of `source` (both splits)."""
  texts, _ = open_files(source, "text")
  return len(texts), sum(len(tokenizer.encode(text)) for text in texts)


def main(argv: list[str]) -> None:
  """Builds MODEL_PATH (after checking the flags and that its folder can be written: one line,
  exit status 2, rather than after a minute of training), then counts with `--count`."""
  unknown = [a for a in argv if a != "--count"]
  with cli.user_errors("experiments.study.tokenizer"):
    cli.require(not unknown, f"unexpected arguments {unknown}: the only flag is --count")
    check_writable(os.path.dirname(MODEL_PATH), hint="the tokenizer is written there")
    built = build()  # a missing corpus stops before the training, in one line
  print(f"{MODEL_PATH}: {built.vocab_size} pieces")
  if "--count" in argv:
    corpus = os.path.dirname(TOKENIZER_SOURCE)
    for name in ("gutenberg_train_0", "gutenberg_train_1", "gutenberg_val", "wikitext2_test"):
      docs, tokens = count_tokens(built, os.path.join(corpus, f"{name}.jsonl.zst"))
      print(f"{name}: {docs} documents, {tokens:,} tokens", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
