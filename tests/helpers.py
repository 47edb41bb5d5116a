"""Shared test helpers: tiny configs and synthetic packed batches."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from configs import base  # noqa: E402  pylint: disable=wrong-import-position


def subprocess_env(**extra: str) -> dict[str, str]:
  """A clean environment for a `birdie_jax` CLI subprocess: CPU, this suite's compilation cache
  and quick (unoptimised) compiles, plus `extra`."""
  cache = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")
  return {"JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
          "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
          **{k: os.environ[k] for k in cache if k in os.environ}, **extra}


def tiny_config(**mesh_shape):
  """configs/base.py:tiny with an optional mesh shape (data=, fsdp=, tensor=)."""
  config = base.get_config("tiny")
  for axis, size in mesh_shape.items():
    config.mesh.shape[axis] = size
  return config


def packed_batch(rng: np.random.Generator, batch: int, length: int, vocab: int,
                 doc_lengths: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
  """A next-token batch; each row packs documents of `doc_lengths` (default: one full row)."""
  doc_lengths = doc_lengths or (length,)
  inputs = rng.integers(1, vocab, (batch, length)).astype(np.int32)
  segment_ids = np.zeros((batch, length), np.int32)
  positions = np.zeros((batch, length), np.int32)
  start = 0
  for i, n in enumerate(doc_lengths):
    segment_ids[:, start:start + n] = i + 1
    positions[:, start:start + n] = np.arange(n)
    start += n
  targets = np.roll(inputs, -1, axis=1)
  loss_mask = (segment_ids > 0).astype(np.float32)
  return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask,
          "segment_ids": segment_ids, "positions": positions,
          "prefix_mask": np.zeros((batch, length), bool)}


@contextlib.contextmanager
def flags_of(define):
  """The absl flags `define` adds, for one test; removed afterwards (programs define theirs only
  when run), with absl's parsed state and logging verbosity as they were."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  before, parsed, verbosity = set(flags.FLAGS), flags.FLAGS.is_parsed(), logging.get_verbosity()
  define()
  try:
    yield
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
    if not parsed:
      flags.FLAGS.unparse_flags()
    logging.set_verbosity(verbosity)
