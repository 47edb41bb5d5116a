"""`python -m birdie_jax.bench objectives`: objective and mixture throughput on one CPU core.

For each objective class (Birdie's configurations of that class, uniformly) and for the full Birdie
mixture (uniform per class), pre-tokenized documents are packed into rows by `DocumentPacker` (the
work of the pipeline's pack stage: cutting, objective, layout); then the whole Grain pipeline runs
from raw text with the same mixture, tokenization included. Tokens are packed example positions
(context and targets, not padding: the paper's accounting). The process is pinned to one core and
rates are per CPU-second of this process (all its threads), so other load on the machine does not
lower them; wall-clock rates are printed beside. The last line is one JSON object, also appended,
with the date, command, host and versions, to `--results`.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import time
from typing import Any

import numpy as np

from birdie_jax import cli
from birdie_jax.data import embedded_corpus
from birdie_jax.data import special_tokens
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.packing import DocumentPacker
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.data.tokenizer import train_sentencepiece
from birdie_jax.objectives.mixture import Mixture

_VERSIONED = ("numpy", "grain", "sentencepiece", "jax")


class _Clock:
  """CPU seconds of this process and wall seconds since creation."""

  def __init__(self):
    self._cpu, self._wall = time.process_time(), time.perf_counter()

  def cpu(self) -> float:
    """CPU seconds used by this process (all threads) since creation."""
    return time.process_time() - self._cpu

  def wall(self) -> float:
    """Wall seconds since creation."""
    return time.perf_counter() - self._wall


def _rates(count: dict[str, float], clock: _Clock) -> dict[str, float]:
  """Per-CPU-second and per-wall-second rates of each count."""
  cpu, wall = clock.cpu(), clock.wall()
  out = {f"{name}_per_s": value / cpu for name, value in count.items()}
  out.update({f"{name}_per_wall_s": value / wall for name, value in count.items()})
  return out


def pack_rate(documents: list[np.ndarray], mixture: Mixture, tokenizer: Tokenizer,
              seconds: float) -> dict[str, float]:
  """Token ids -> packed rows for about `seconds` of CPU: examples/s, tokens/s, padding."""
  packer = DocumentPacker(mixture.seq_len, begin_id=tokenizer.special_id(special_tokens.BEGIN),
                          pad_id=tokenizer.pad_id, make_example=mixture)
  examples, index, clock = 0, 0, _Clock()
  while clock.cpu() < seconds or not packer.stats.rows:
    packer.set_document(index, documents[index % len(documents)])
    index += 1
    while (row := packer.fill()) is not None:
      examples += int(row["segment_ids"].max())
  result = _rates({"examples": examples, "tokens": packer.stats.tokens}, clock)
  return {**result, "padding_fraction": packer.stats.padding_fraction}


def text_rate(texts: list[str], mixture: Mixture, tokenizer: Tokenizer, seconds: float,
              batch_size: int) -> dict[str, float]:
  """Raw text -> tokenized -> packed batches through the Grain pipeline: tokens/s."""
  iterator = iter(make_train_dataset(texts, tokenizer, seq_len=mixture.seq_len,
                                     batch_size=batch_size, seed=0, make_example=mixture))
  next(iterator)  # starts the read threads
  tokens, clock = 0, _Clock()
  while clock.cpu() < seconds or not tokens:
    tokens += int(np.count_nonzero(next(iterator)["segment_ids"]))
  result = _rates({"tokens": tokens}, clock)
  iterator.close()
  return result


def _pin_to_one_core(core: int) -> int:
  """Restricts this process (and the threads it starts) to one CPU core; returns the core."""
  allowed = sorted(os.sched_getaffinity(0))
  core = allowed[0] if core < 0 else core
  os.sched_setaffinity(0, {core})
  return core


def _tokenizer(kind: str, vocab_size: int, texts: list[str], cache_dir: str) -> Tokenizer:
  if kind == "bytes":
    return ByteTokenizer()
  return train_sentencepiece(texts, vocab_size=vocab_size, cache_dir=cache_dir)


def _host() -> dict[str, Any]:
  model = next((line.split(":", 1)[1].strip() for line in
                pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
  return {"cpu": model, "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
          "python": platform.python_version(),
          "versions": {name: importlib.metadata.version(name) for name in _VERSIONED}}


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Measures everything; prints one line per measurement; returns the result object."""
  core = _pin_to_one_core(args.core)
  texts = list(embedded_corpus.passages())
  if args.documents:
    texts = texts[:args.documents]
  tokenizer = _tokenizer(args.tokenizer, args.vocab_size, texts, args.cache_dir)
  clock = _Clock()
  documents = tokenizer.encode_batch(texts)
  tokenizer_rate = sum(map(len, documents)) / clock.cpu()
  print(f"{len(texts)} documents, {np.mean([len(t) for t in texts]):,.0f} characters on average, "
        f"{tokenizer.vocab_size}-piece {args.tokenizer} tokenizer: "
        f"{tokenizer_rate:,.0f} tokens/s per core (core {core})")
  birdie = make_mixture(tokenizer, curriculum="birdie", seq_len=args.seq_len)
  per_objective = {}
  for name in birdie.curriculum.classes:
    mixture = make_mixture(tokenizer, curriculum="birdie", seq_len=args.seq_len,
                           class_weights=f"{name}=1")
    per_objective[name] = pack_rate(documents, mixture, tokenizer, args.seconds)
  per_objective["birdie_mixture"] = pack_rate(documents, birdie, tokenizer, args.seconds)
  for name, r in per_objective.items():
    print(f"{name:<22} {r['examples_per_s']:>10,.0f} examples/s {r['tokens_per_s']:>12,.0f} "
          f"tokens/s per core  (wall {r['tokens_per_wall_s']:>12,.0f})  padding "
          f"{r['padding_fraction']:.1%}")
  text = text_rate(texts, birdie, tokenizer, args.seconds, args.batch_size)
  print(f"{'birdie_mixture, text':<22} {text['tokens_per_s']:>34,.0f} tokens/s per core  (wall "
        f"{text['tokens_per_wall_s']:>12,.0f})  tokenization included")
  mixture_rate = per_objective["birdie_mixture"]
  return {
      "benchmark": "objectives", "seq_len": args.seq_len,
      "tokenizer": f"{args.tokenizer}-{tokenizer.vocab_size}", "documents": len(texts),
      "tokens_per_s_per_core": round(mixture_rate["tokens_per_s"]),
      "text_tokens_per_s_per_core": round(text["tokens_per_s"]),
      "examples_per_s_per_core": round(mixture_rate["examples_per_s"]),
      "padding_fraction": round(mixture_rate["padding_fraction"], 4),
      "tokenizer_tokens_per_s_per_core": round(tokenizer_rate),
      "per_objective": {name: {key: round(value, 4) if key == "padding_fraction" else round(value)
                               for key, value in r.items()} for name, r in per_objective.items()},
  }


def main(argv: list[str]) -> None:
  """Parses flags, runs the benchmark, prints the JSON line and appends it to --results."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench objectives",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--seq_len", type=cli.positive_int, default=2048,
                      help="tokens per packed row")
  parser.add_argument("--tokenizer", choices=("sentencepiece", "bytes"), default="sentencepiece")
  parser.add_argument("--vocab_size", type=cli.positive_int, default=8192,
                      help="sentencepiece BPE pieces")
  parser.add_argument("--seconds", type=cli.positive_float, default=3.0,
                      help="CPU seconds per measurement")
  parser.add_argument("--documents", type=cli.non_negative_int, default=0,
                      help="embedded passages used (0: all)")
  parser.add_argument("--batch_size", type=cli.positive_int, default=8,
                      help="rows per batch, text pipeline")
  parser.add_argument("--core", type=int, default=-1, help="CPU core to pin to (-1: first)")
  parser.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/birdie_jax"),
                      help="where the trained tokenizer is cached")
  parser.add_argument("--results", default="experiments/benchmarks/results.jsonl",
                      help="JSONL file the result is appended to ('' for none)")
  args = parser.parse_args(argv)
  result = run(args)
  if args.results:
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python -m birdie_jax.bench objectives", *argv]),
              "host": _host(), **result}
    path = pathlib.Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
  print(json.dumps(result), flush=True)
