"""Choosing the next mixture: random candidates scored by the reward model, or a sparse exploration.

Exploiting (paper Fig. 4 with the original agent's additions): `num_candidates` rows of U[0,1)^n,
each normalised to sum 1, plus their element-wise 4th powers renormalised (sharper mixtures); each
candidate is placed after the history as the row `[current losses, candidate]`, its
per-configuration rewards are predicted at that row (the last real position; the public v2 code
reads the padding row after it and so scores every candidate the same), combined into the
class-normalised total, and the `top_k` best candidates are averaged.

Exploring (the original agent): 1 or 2 distinct classes (even odds) get random weights, normalised
within each chosen class; every other configuration gets `loss * 0.01 * k * N / (N - k) / n_class`
(k chosen classes, N configurations, n_class the size of its class); the whole vector is multiplied
by the current losses and normalised. As in the agent, the exploring action then stands in for every
random candidate, so the reward model only picks between it and its sharpened copy. (The agent drew
the classes with replacement, so "two" classes were sometimes one; we draw distinct classes.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from birdie_jax.controller import reward_model
from birdie_jax.controller.reward import class_sizes
from birdie_jax.controller.reward import config_weights

SHARPEN_POWER = 4
UNEXPLORED_SHARE = 0.01  # per chosen class, spread over the configurations of the other classes


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.sum(x, axis=-1, keepdims=True)


def exploring_action(key: jax.Array, losses: jax.Array, class_of_config: np.ndarray) -> jax.Array:
  """A sparse mixture concentrated on 1 or 2 random classes (see the module doc)."""
  sizes = class_sizes(class_of_config)
  num_classes, num_configs = sizes.size, len(class_of_config)
  k_count, k_order, k_weights = jax.random.split(key, 3)
  chosen_count = jnp.minimum(1 + jax.random.bernoulli(k_count).astype(jnp.int32), num_classes)
  order = jax.random.permutation(k_order, num_classes)
  chosen = jnp.zeros(num_classes, bool).at[order].set(jnp.arange(num_classes) < chosen_count)
  raw = jax.random.uniform(k_weights, (num_configs,))
  per_class_sum = jax.ops.segment_sum(raw, class_of_config, num_segments=num_classes)
  inside = raw / per_class_sum[class_of_config]
  share = UNEXPLORED_SHARE * chosen_count * num_configs / jnp.maximum(num_configs - chosen_count, 1)
  outside = losses * share / sizes[class_of_config]
  return _normalise(jnp.where(chosen[class_of_config], inside, outside) * losses)


def candidates(key: jax.Array, num_candidates: int, explore: jax.Array,
               explore_mixture: jax.Array) -> jax.Array:
  """(2 * num_candidates, n) mixtures: uniform random ones (all `explore_mixture` if `explore`),
  then their renormalised 4th powers."""
  base = _normalise(jax.random.uniform(key, (num_candidates, explore_mixture.shape[-1])))
  base = jnp.where(explore, explore_mixture, base)
  return jnp.concatenate([base, _normalise(base**SHARPEN_POWER)])


def score(params: reward_model.Params, carry: list[jax.Array], losses: jax.Array,
          mixtures: jax.Array, class_of_config: np.ndarray) -> jax.Array:
  """Predicted class-normalised total reward of each (B, n) mixture, given the history's `carry`."""
  rows = jnp.concatenate([jnp.broadcast_to(losses, mixtures.shape), mixtures], axis=-1)
  return reward_model.predict_next(params, carry, rows) @ config_weights(class_of_config)


def best_mixture(mixtures: jax.Array, scores: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array]:
  """(the normalised mean of the `top_k` best-scored mixtures, their mean score)."""
  top_scores, top = jax.lax.top_k(scores, top_k)
  return _normalise(jnp.mean(mixtures[top], axis=0)), jnp.mean(top_scores)
