"""The `controller` config section: every key, its default and a one-line comment."""
from __future__ import annotations

import ml_collections

# The curricula whose mixture the controller steers during training; the others keep their
# starting weights (and score their validation loss on the loop's own batches).
CONTROLLED_CURRICULA = ("birdie", "birdie_causal")


def default_settings() -> ml_collections.ConfigDict:
  """The controller's config keys at their defaults (the paper's and the original agent's)."""
  c = ml_collections.ConfigDict()
  c.eval_every = 1000        # steps between evaluations after step 2000 (times schedule_scale)
  c.schedule_scale = 0.0     # factor on the paper's evaluation steps (0: train.steps / 32000, <= 1)
  c.history = 40             # reward-model history rows kept (the paper's run has 37 evaluations;
                             # older rows slide out; 0: one per scheduled evaluation)
  c.num_candidates = 2048    # random candidate mixtures per choice (plus as many sharpened copies)
  c.top_k = 8                # best-scored candidates averaged into the next mixture
  c.train_steps = 200        # reward-model AdamW steps at each evaluation (one cyclic-LR cycle)
  c.hidden = 256             # reward-model width (the Gated SSM's state is twice this)
  c.layers = 4               # reward-model Gated SSM blocks
  c.learning_rate = 5e-4     # peak of the reward model's cyclic learning rate (low end: / 1000)
  c.weight_decay = 0.1       # reward model's AdamW decoupled weight decay
  c.grad_clip = 1.0          # reward model's global gradient-norm clip
  c.noise = 0.02             # each fit step scales inputs and targets by U[1 - noise, 1 + noise]
  c.explore = True           # explore on the original agent's schedule (False: always exploit)
  c.seed = 0                 # seeds the reward model, candidates and exploration
  c.val_rows = 4             # validation rows per configuration at each evaluation (rounded up
                             # to a multiple of the mesh's batch shards)
  return c
