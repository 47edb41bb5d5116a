"""The mechanism lab's synthetic tasks: generators of (prompt X, answer Y) rows in a plain id space.

Every task draws from a vocabulary of its own (no tokenizer): id 0 is padding, 1 is BEGIN, 2 is
SEP, and `data_ids` data ids follow from `FIRST_DATA_ID` (default 8192, Zoology's; a CPU sweep uses
fewer: the embedding dominates a small model's cost). An example is laid out exactly as
Birdie's packer lays out an objective (`data.packing`, `evals.layout`'s prefix layout):

    inputs   X ... X  BEGIN  Y0 ... Y(m-2)  pad ...
    targets  0 ... 0  Y0     Y1 ... Y(m-1)  0   ...
    prefix   1 ... 1  0      0  ...         0   ...      (True on X: the bidirectional prefix)

so a model with `model.bidirectional` reads the prompt (context and question) in both directions
and answers causally, and a causal model reads the same row left to right (it ignores the prefix
mask). Only the answer tokens in `scored` carry loss and are scored (teacher-forced argmax
accuracy, Zoology's metric, and exact match per example).

Tasks and their difficulty `d` (the sweep's `task:d` items):
  mqar               Zoology's multi-query associative recall: X = k1 v1 ... kd vd, Y = the
                     query region of `mqar_length(d)` - 2d tokens where every key reappears once
                     at a gap drawn from Zoology's power law (a = 0.01) with its value after it,
                     other positions filler; the values are scored. Keys from the lower half of
                     the data ids, values from the upper half.
  mqar_pq            MQAR with the queries also in the prefix (JRT's "read the question first"):
                     X = the d pairs, SEP, then `PQ_QUERIES` queried keys; Y = each queried key
                     followed by its value (values scored). A causal model must keep all d
                     pairs; a prefix model can know which few to keep.
  disjoint_sf/_lf    JRT's set disjointness: two sets sharing exactly one element; X = A SEP B,
                     Y = the shared element. `sf` puts the short set (`DISJOINT_SHORT` ids) first,
                     `lf` the long one (d ids) first: a causal model must hold the first set, so
                     long-first needs state that grows with d; a prefix model reads both orders.
  copying            X = d random data ids, Y = the same ids (Jelassi et al.'s copy task).
  selective_copying  X = d positions of a noise id with `TOKENS_TO_COPY` data ids (from 14) at
                     random places, Y = those ids in order (the Mamba paper's task).
  phonebook_qf/_ql   The Birdie-format phonebook: d entries "name(2 ids) number(4 digit ids)"
                     (names from up to 256 pieces);
                     the question is one name, before the book (`qf`: X = name SEP book) or after
                     it (`ql`: X = book SEP name); Y = its 4 digits, scored. Question-last is the
                     case where reading the prompt backwards should help.
Example i of split s of a task at difficulty d comes from `np.random.default_rng([seed, crc32(task),
s, d, i])` so splits are disjoint streams and every run sees the same examples.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import zlib

import numpy as np

from birdie_jax.evals.mqar import gap_probabilities

PAD_ID, BEGIN_ID, SEP_ID = 0, 1, 2
FIRST_DATA_ID = 3
DATA_IDS = 8192         # data ids by default: Zoology's vocabulary
PQ_QUERIES = 8          # queried keys of mqar_pq (field.md R1: "queries <= 8")
DISJOINT_SHORT = 4      # the short set's size in set disjointness
TOKENS_TO_COPY = 16     # selective copying: ids to memorise (Mamba)
SELECTIVE_DATA = 14     # selective copying: data ids (Mamba's 16 minus noise and marker)
NAME_IDS, NAME_LEN, DIGITS = 256, 2, 4  # phonebook: name pieces (at most), per name, digits
SPLITS = {"train": 0, "val": 1, "test": 2}


def mqar_length(kv: int) -> int:
  """Zoology's sequence length for `kv` pairs (its test sets: 64 up to 16 pairs, then 4 x kv)."""
  return max(64, 4 * kv)


@dataclasses.dataclass(frozen=True)
class Example:
  """One example: prompt X, answer Y and which answer tokens are scored (and trained)."""
  prompt: np.ndarray
  answer: np.ndarray
  scored: np.ndarray


def name_pieces(data_ids: int) -> int:
  """Phonebook name pieces: NAME_IDS, or what the data ids leave after the 10 digits."""
  return min(NAME_IDS, data_ids - 10)


def _data(lo: int, hi: int) -> np.ndarray:
  return np.arange(FIRST_DATA_ID + lo, FIRST_DATA_ID + hi, dtype=np.int32)


def _pairs(rng, d, n):
  """d distinct keys from the lower half of the data ids, values from the upper half, and the
  context k1 v1 ... kd vd."""
  keys = rng.choice(_data(0, n // 2), d, replace=False)
  values = rng.choice(_data(n // 2, n), d)
  return keys, values, np.stack([keys, values], 1).reshape(-1)


def _mqar(rng, d, n):
  keys, values, context = _pairs(rng, d, n)
  region = mqar_length(d) - 2 * d
  gaps = rng.choice(region // 2, d, replace=False, p=gap_probabilities(region // 2))
  filler = np.setdiff1d(_data(0, n), keys)
  answer = rng.choice(filler, region).astype(np.int32)
  answer[2 * gaps], answer[2 * gaps + 1] = keys, values
  scored = np.zeros(region, bool)
  scored[2 * gaps + 1] = True
  return context, answer, scored


def _mqar_pq(rng, d, n):
  keys, values, context = _pairs(rng, d, n)
  asked = rng.choice(d, min(PQ_QUERIES, d), replace=False)
  prompt = np.concatenate([context, [SEP_ID], keys[asked]])
  answer = np.stack([keys[asked], values[asked]], 1).reshape(-1)
  return prompt, answer, np.arange(len(answer)) % 2 == 1


def _disjoint(rng, d, n, long_first):
  ids = rng.choice(_data(0, n), DISJOINT_SHORT + d - 1, replace=False)
  short, long = ids[:DISJOINT_SHORT], np.concatenate([ids[DISJOINT_SHORT:], [0]])
  long[-1] = shared = short[rng.integers(DISJOINT_SHORT)]
  long = rng.permutation(long)
  first, second = (long, short) if long_first else (short, long)
  prompt = np.concatenate([first, [SEP_ID], second])
  return prompt, np.array([shared]), np.ones(1, bool)


def _copying(rng, d, n):
  string = rng.choice(_data(0, n), d)
  return string, string.copy(), np.ones(d, bool)


def _selective_copying(rng, d, n):
  del n  # Mamba's 16 ids
  noise, data = FIRST_DATA_ID, _data(1, 1 + SELECTIVE_DATA)
  places = np.sort(rng.choice(d, TOKENS_TO_COPY, replace=False))
  tokens = rng.choice(data, TOKENS_TO_COPY)
  sequence = np.full(d, noise, np.int32)
  sequence[places] = tokens
  return sequence, tokens, np.ones(TOKENS_TO_COPY, bool)


def _phonebook(rng, d, n, question_first):
  digits, pieces = _data(0, 10), _data(10, 10 + name_pieces(n))
  names = set()
  while len(names) < d:  # distinct names: pairs of pieces
    names.add(tuple(rng.choice(pieces, NAME_LEN)))
  names = np.array(sorted(names), np.int32)[rng.permutation(d)]
  numbers = rng.choice(digits, (d, DIGITS))
  book = np.concatenate([names, numbers], 1).reshape(-1)
  asked = int(rng.integers(d))
  question = names[asked]
  parts = [question, [SEP_ID], book] if question_first else [book, [SEP_ID], question]
  return np.concatenate(parts), numbers[asked].copy(), np.ones(DIGITS, bool)


_GENERATORS = {
    "mqar": _mqar,
    "mqar_pq": _mqar_pq,
    "disjoint_sf": lambda rng, d, n: _disjoint(rng, d, n, long_first=False),
    "disjoint_lf": lambda rng, d, n: _disjoint(rng, d, n, long_first=True),
    "copying": _copying,
    "selective_copying": _selective_copying,
    "phonebook_qf": lambda rng, d, n: _phonebook(rng, d, n, question_first=True),
    "phonebook_ql": lambda rng, d, n: _phonebook(rng, d, n, question_first=False),
}
TASKS = tuple(_GENERATORS)


def vocab_size(data_ids: int = DATA_IDS) -> int:
  """The number of ids a lab model needs: the reserved ones and `data_ids`."""
  return FIRST_DATA_ID + data_ids


def check_difficulty(task: str, d: int, data_ids: int = DATA_IDS) -> str | None:
  """Why `task` cannot be generated at difficulty `d` over `data_ids` ids, or None."""
  if task not in _GENERATORS:
    return f"unknown lab task {task!r}; the tasks are {', '.join(TASKS)}"
  minimum = {"selective_copying": TOKENS_TO_COPY, "disjoint_sf": DISJOINT_SHORT,
             "disjoint_lf": DISJOINT_SHORT}.get(task, 1)
  if d < minimum:
    return f"lab task {task} needs a difficulty >= {minimum}, got {d}"
  needed = {"mqar": 2 * d + 2, "mqar_pq": 2 * d, "disjoint_sf": DISJOINT_SHORT + d,
            "disjoint_lf": DISJOINT_SHORT + d, "copying": 2,
            "selective_copying": 1 + SELECTIVE_DATA,
            "phonebook_qf": 12, "phonebook_ql": 12}[task]
  if data_ids < needed:
    return f"lab task {task} at difficulty {d} needs >= {needed} data ids, got {data_ids}"
  most = name_pieces(data_ids) ** NAME_LEN // 2
  if task.startswith("phonebook") and d > most:
    return f"lab task {task}: at most {most} entries over {data_ids} data ids, got {d}"
  return None


def example(task: str, d: int, rng: np.random.Generator, data_ids: int = DATA_IDS) -> Example:
  """One example of `task` at difficulty `d` over `data_ids` ids, drawn from `rng` alone."""
  prompt, answer, scored = _GENERATORS[task](rng, d, data_ids)
  return Example(np.asarray(prompt, np.int32), np.asarray(answer, np.int32),
                 np.asarray(scored, bool))


def example_rng(seed: int, task: str, d: int, split: str, index: int) -> np.random.Generator:
  """The generator of example `index` of a split (disjoint streams per split)."""
  return np.random.default_rng([seed, zlib.crc32(task.encode()), SPLITS[split], d, index])


def row_length(task: str, d: int, data_ids: int = DATA_IDS) -> int:
  """Positions one laid-out example takes (the same for every example of a difficulty)."""
  e = example(task, d, example_rng(0, task, d, "train", 0), data_ids)
  return len(e.prompt) + len(e.answer)


def layout(e: Example, length: int) -> dict[str, np.ndarray]:
  """One example as a row of `length` positions (module docstring), padded at the end."""
  x, y = e.prompt, e.answer
  used = len(x) + len(y)
  if used > length:
    raise ValueError(f"an example of {used} positions does not fit a row of {length}")
  pad = length - used
  return {
      "inputs": np.concatenate([x, [BEGIN_ID], y[:-1], np.zeros(pad)]).astype(np.int32),
      "targets": np.concatenate([np.zeros(len(x)), y, np.zeros(pad)]).astype(np.int32),
      "loss_mask": np.concatenate([np.zeros(len(x)), e.scored, np.zeros(pad)]).astype(np.float32),
      "prefix_mask": np.arange(length) < len(x),
      "segment_ids": (np.arange(length) < used).astype(np.int32),
      "positions": np.arange(length, dtype=np.int32),
  }


def rows(task: str, difficulties: int | Sequence[int], split: str, count: int, *,
         data_ids: int = DATA_IDS, seed: int = 0) -> dict[str, np.ndarray]:
  """`count` examples of a split, compactly: `inputs`, `prefix_mask` and `segment_ids`
  (count, longest row) as `layout` makes them, padded; and the scored answer tokens' columns
  `score_positions`, ids `score_targets` and `score_weights` (1, or 0 on padding) of shape
  (count, most scored tokens): the lab computes logits only there. With several difficulties,
  example i has difficulty `difficulties[i % len(difficulties)]` (a mixed training set)."""
  ds = [difficulties] if isinstance(difficulties, int) else list(difficulties)
  length = max(row_length(task, d, data_ids) for d in ds)
  laid = [layout(example(task, ds[i % len(ds)],
                         example_rng(seed, task, ds[i % len(ds)], split, i // len(ds)), data_ids),
                 length) for i in range(count)]
  scored = [np.flatnonzero(row["loss_mask"]) for row in laid]
  width = max(len(w) for w in scored)
  out = {k: np.stack([row[k] for row in laid]) for k in ("inputs", "prefix_mask", "segment_ids")}
  out["score_positions"] = np.zeros((count, width), np.int32)
  out["score_targets"] = np.zeros((count, width), np.int32)
  out["score_weights"] = np.zeros((count, width), np.float32)
  for i, (row, where) in enumerate(zip(laid, scored)):
    out["score_positions"][i, :len(where)] = where
    out["score_targets"][i, :len(where)] = row["targets"][where]
    out["score_weights"][i, :len(where)] = 1.0
  return out


def easier(task: str, d: int, halvings: int, data_ids: int = DATA_IDS) -> list[int]:
  """d and up to `halvings` halvings of it that the task allows (Zoology trains MQAR on such a
  mix: 4, 8, 16, 32 and 64 pairs), easiest first."""
  out = [d]
  while len(out) <= halvings and out[-1] // 2 >= 1 and \
      check_difficulty(task, out[-1] // 2, data_ids) is None:
    out.append(out[-1] // 2)
  return out[::-1]
