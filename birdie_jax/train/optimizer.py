"""AdamW with linear warm-up, cosine decay and global-norm clipping; no decay on norms, biases,
the RG-LRU's recurrence parameters or the Gated SSM's forget gate (as the paper trains them)."""
from __future__ import annotations

import jax
import ml_collections
import optax

from birdie_jax.models.layer_stack import layer_ndim


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to `learning_rate`, then cosine to `learning_rate * end_lr_ratio`."""
  warmup = min(train.warmup_steps, max(train.steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate, warmup_steps=warmup,
      decay_steps=max(train.steps, warmup + 1),
      end_value=train.learning_rate * train.end_lr_ratio)


_NO_DECAY_MODULES = {"lru", "forget_gate"}  # the RG-LRU (gates and Lambda), the Gated SSM's W_f


def weight_decay_mask(params) -> object:
  """True for the leaves that take weight decay: matrices outside the recurrences' decay gates."""

  def decays(path, leaf) -> bool:
    names = {str(getattr(k, "key", k)) for k in path}
    return layer_ndim(path, leaf) >= 2 and not names & _NO_DECAY_MODULES

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The training optimizer for `train` (a `config.train` group)."""
  return optax.chain(
      optax.clip_by_global_norm(train.grad_clip),
      optax.adamw(learning_rate_schedule(train), b1=train.b1, b2=train.b2,
                  weight_decay=train.weight_decay, mask=weight_decay_mask))
