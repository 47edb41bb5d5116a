"""Autoregressive generation: one prompt pass, then one jit-compiled loop of single-token steps.

The prompt follows the training layout. In the `prefix` layout (Birdie's conditioning) the prompt is
the example's inputs X, read bidirectionally by a Birdie model, followed by the BEGIN token; in the
`continuation` layout (what a next-token model was trained on) it is BEGIN followed by the text to
continue. Prompts of different lengths are left-padded: every row's last column is its last token.

Per generated token, Hawk and the Gated SSM update a fixed-size state (conv window + forward RG-LRU
half), so their cost does not depend on the prompt length; attention reads its KV ring buffer
(the window for Griffin's local attention, prompt + generation for the Transformer).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LAYOUTS = ("prefix", "continuation")


def prompt_batch(prompts: Sequence[np.ndarray], *, begin_id: int, pad_id: int,
                 layout: str = "prefix") -> dict[str, np.ndarray]:
  """Left-padded (B, P) `inputs, segment_ids, positions, prefix_mask` for token-id prompts."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  rows = []
  for prompt in prompts:
    prompt = np.asarray(prompt, np.int32)
    begin = np.array([begin_id], np.int32)
    if layout == "prefix":
      rows.append((np.concatenate([prompt, begin]), len(prompt)))
    else:
      rows.append((np.concatenate([begin, prompt]), 0))
  length = max(len(tokens) for tokens, _ in rows)
  batch = {"inputs": np.full((len(rows), length), pad_id, np.int32),
           "segment_ids": np.zeros((len(rows), length), np.int32),
           "positions": np.zeros((len(rows), length), np.int32),
           "prefix_mask": np.zeros((len(rows), length), bool)}
  for i, (tokens, num_prefix) in enumerate(rows):
    start = length - len(tokens)
    batch["inputs"][i, start:] = tokens
    batch["segment_ids"][i, start:] = 1
    batch["positions"][i, start:] = np.arange(len(tokens))
    batch["prefix_mask"][i, start:start + num_prefix] = True
  return batch


def sample_token(logits: jax.Array, rng: jax.Array, temperature: jax.Array,
                 top_k: int) -> jax.Array:
  """(B, V) logits -> (B,) ids: greedy where `temperature` is 0, else sampled from the
  temperature-scaled distribution restricted to the `top_k` most likely ids (all if 0)."""
  logits = logits.astype(jnp.float32)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  sampled = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6), axis=-1)
  return jnp.where(temperature > 0, sampled.astype(jnp.int32), greedy)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "top_k"))
def _generate(graphdef: nnx.GraphDef, state: nnx.State, batch: dict[str, jax.Array],
              rng: jax.Array, temperature: jax.Array, eos_id: jax.Array, pad_id: jax.Array, *,
              max_new_tokens: int, top_k: int) -> jax.Array:
  model = nnx.merge(graphdef, state)
  logits, cache = model.prefill(
      batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"],
      prefix_mask=batch["prefix_mask"], cache_len=batch["inputs"].shape[1] + max_new_tokens)
  rng, key = jax.random.split(rng)
  first = sample_token(logits[:, -1], key, temperature, top_k)
  out = jnp.full((first.shape[0], max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)

  def cond(carry):
    i, _, _, _, done, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, out, cache, last, done, rng = carry
    logits, cache = model.step(last, cache)
    rng, key = jax.random.split(rng)
    token = jnp.where(done, pad_id, sample_token(logits, key, temperature, top_k))
    out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], i, axis=1)
    return i + 1, out, cache, token, done | (token == eos_id), rng

  carry = (jnp.asarray(1, jnp.int32), out, cache, first, first == eos_id, rng)
  return jax.lax.while_loop(cond, body, carry)[1]


def generate(model: nnx.Module, batch: dict[str, np.ndarray | jax.Array], *, max_new_tokens: int,
             rng: jax.Array, temperature: float = 0.0, top_k: int = 0, eos_id: int = -1,
             pad_id: int = 0) -> jax.Array:
  """(B, max_new_tokens) ids continuing each prompt of `batch` (from `prompt_batch`).

  Sampling is greedy at temperature 0. A row stops after `eos_id` (if given) and is filled with
  `pad_id`; the loop ends early once every row has stopped.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, {k: jnp.asarray(v) for k, v in batch.items()}, rng,
                   jnp.asarray(temperature, jnp.float32), jnp.asarray(eos_id, jnp.int32),
                   jnp.asarray(pad_id, jnp.int32), max_new_tokens=max_new_tokens, top_k=top_k)
