"""Tiny model configs and Birdie-layout batches shared by the tests/test_models_*.py files."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from birdie_jax.config import default_config
from birdie_jax.models import build_model

FAMILIES = ("hawk", "gated_ssm", "griffin", "transformer")
VOCAB = 64


def tiny_model_config(family: str, bidirectional: bool):
  """The family's `tiny` preset (Griffin's window is 6 tokens, so windows matter at L ~ 20)."""
  cfg = default_config().model
  cfg.family = family
  cfg.preset = "tiny"
  cfg.bidirectional = bidirectional
  return cfg


def tiny_model(family: str, bidirectional: bool, seed: int = 0):
  """A float32 tiny model of `family`."""
  return build_model(tiny_model_config(family, bidirectional), VOCAB, rngs=nnx.Rngs(seed))


def birdie_rows(rng: np.random.Generator, batch: int,
                docs: tuple[tuple[int, int], ...]) -> dict[str, np.ndarray]:
  """Rows packing documents given as (prefix length, total length), laid out X + [BEGIN] + Y."""
  length = sum(n for _, n in docs)
  out = {"inputs": rng.integers(1, VOCAB, (batch, length)).astype(np.int32),
         "segment_ids": np.zeros((batch, length), np.int32),
         "positions": np.zeros((batch, length), np.int32),
         "prefix_mask": np.zeros((batch, length), bool)}
  start = 0
  for i, (prefix, n) in enumerate(docs):
    out["segment_ids"][:, start:start + n] = i + 1
    out["positions"][:, start:start + n] = np.arange(n)
    out["prefix_mask"][:, start:start + prefix] = True
    start += n
  return out


@pytest.fixture(scope="module")
def fast_compile():
  """Compiles with XLA's optimisation passes off while a module runs: these tests check what the
  model computes, not how fast, and tiny CPU compiles dominate their runtime (about 2.5x faster)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
