"""The reward-driven objective controller: `Controller` (static settings) + `ControllerState`.

    controller = Controller.from_config(config.controller, class_of_config=curriculum.class_index,
                                        total_steps=config.train.steps)
    state = controller.init()
    ...after training step `step`, if controller.schedule.is_eval_step(step):
    state = controller.update(state, val_losses, step)     # one jitted call
    mixture.with_weights(controller.mixture_weights(state))

`update` (one jitted call; compiled once per history window, `history_window`; `compile` does it
ahead and says how long it took) does, from the previous evaluation's losses to these:
  1. reward per configuration (`reward.reward`); the row [previous losses, mixture used] with that
     reward joins the history (not at the first evaluation, which only records the losses);
  2. `train_steps` AdamW steps of the reward model on the whole history (`fit`);
  3. from `schedule.control_start` on, the next mixture (`selection`): with the exploration
     probability of `schedule.explore_probability` a sparse exploring mixture, else the average of
     the `top_k` best of 2 x `num_candidates` candidates scored at the last history position.
Before `control_start` the mixture stays uniform per class (1 / num_classes per class, split
evenly inside it).
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from birdie_jax.controller import fit
from birdie_jax.controller import reward_model
from birdie_jax.controller import schedule as schedule_lib
from birdie_jax.controller import selection
from birdie_jax.controller import state as state_lib
from birdie_jax.controller.reward import class_means
from birdie_jax.controller.reward import config_weights
from birdie_jax.controller.reward import reward
from birdie_jax.controller.state import ControllerState
from birdie_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Controller:
  """Static settings of a run's controller; hashable, so `update` compiles once per controller."""

  class_of_config: tuple[int, ...]  # class index (0..C-1, all present) of each configuration
  total_steps: int  # the run's training steps (indexes the exploration schedule)
  schedule: schedule_lib.EvalSchedule
  capacity: int  # history rows kept
  num_candidates: int = 2048
  top_k: int = 8
  train_steps: int = 200
  hidden: int = 256
  layers: int = 4
  learning_rate: float = 5e-4
  weight_decay: float = 0.1
  grad_clip: float = 1.0
  noise: float = 0.02
  explore: bool = True
  seed: int = 0

  def __post_init__(self):
    classes = np.asarray(self.class_of_config)
    if (classes.ndim != 1 or not classes.size or classes.min() < 0
        or np.any(np.bincount(classes) == 0)):
      raise ConfigError("class_of_config must give every configuration a class 0..C-1, each used")
    if not 1 <= self.top_k <= 2 * self.num_candidates:
      raise ConfigError(f"controller.top_k must be in [1, 2 * num_candidates], got {self.top_k}")
    for name in ("capacity", "num_candidates", "train_steps", "hidden", "layers", "total_steps"):
      if getattr(self, name) < 1:
        raise ConfigError(f"controller {name} must be positive, got {getattr(self, name)}")
    if not 0 <= self.noise < 1:
      raise ConfigError(f"controller.noise must be in [0, 1), got {self.noise}")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *, class_of_config: Sequence[int],
                  total_steps: int) -> Controller:
    """The controller of a `controller` config section for a run of `total_steps` steps."""
    schedule = schedule_lib.make_schedule(total_steps, eval_every=config.eval_every,
                                          scale=config.schedule_scale)
    capacity = config.history or max(1, len(schedule.steps) - 1)
    return cls(tuple(int(c) for c in class_of_config), total_steps, schedule, capacity,
               num_candidates=config.num_candidates, top_k=config.top_k,
               train_steps=config.train_steps, hidden=config.hidden, layers=config.layers,
               learning_rate=config.learning_rate, weight_decay=config.weight_decay,
               grad_clip=config.grad_clip, noise=config.noise, explore=config.explore,
               seed=config.seed)

  @property
  def classes(self) -> np.ndarray:
    """`class_of_config` as an int array."""
    return np.asarray(self.class_of_config, np.int32)

  @property
  def num_configs(self) -> int:
    """Configurations (arms of the action space)."""
    return len(self.class_of_config)

  def uniform_mixture(self) -> np.ndarray:
    """1 / num_classes per class, split evenly within each class."""
    weights = config_weights(self.classes)
    return weights / weights.sum()

  def optimizer(self) -> optax.GradientTransformation:
    """The reward model's Optax optimizer."""
    return fit.make_optimizer(self.learning_rate, self.train_steps, self.weight_decay,
                              self.grad_clip)

  def init(self) -> ControllerState:
    """The state before the first evaluation: a fresh reward model and the uniform mixture."""
    key, init_key = jax.random.split(jax.random.PRNGKey(self.seed))
    params = reward_model.init_params(init_key, self.num_configs, hidden=self.hidden,
                                      layers=self.layers)
    zeros = jnp.zeros((self.capacity, self.num_configs), jnp.float32)
    return ControllerState(
        params=params, opt_state=self.optimizer().init(params), losses=zeros, actions=zeros,
        rewards=zeros, steps=jnp.zeros(self.capacity, jnp.int32), count=jnp.int32(0),
        action=jnp.asarray(self.uniform_mixture()),
        prev_losses=jnp.zeros(self.num_configs, jnp.float32), prev_step=jnp.int32(-1),
        num_updates=jnp.int32(0), key=key, fit_losses=jnp.zeros(self.train_steps, jnp.float32),
        predicted_reward=jnp.float32(0), explored=jnp.bool_(False))

  def update(self, state: ControllerState, val_losses: np.ndarray | Sequence[float],
             step: int) -> ControllerState:
    """The state after the evaluation at `step` with per-configuration `val_losses` (see module)."""
    losses = np.asarray(val_losses, np.float32)
    if losses.shape != (self.num_configs,) or not np.all(np.isfinite(losses)):
      raise ValueError(f"val_losses must be {self.num_configs} finite values, got {losses}")
    state, window = self._placed(state)
    with jax.set_mesh(None):
      return _update(self, state, losses, jnp.int32(step), window)

  def compile(self, state: ControllerState) -> float:
    """Compiles the `update` that follows `state` unless that is done; returns the seconds spent.

    `update` compiles on first use of each history window anyway; calling this first keeps the
    compile out of the update's own timing (the trainer prints both).
    """
    state, window = self._placed(state)
    if (self, window) in _COMPILED:
      return 0.0
    start = time.perf_counter()
    losses = np.zeros(self.num_configs, np.float32)
    with jax.set_mesh(None):
      _update.lower(self, state, losses, jnp.int32(0), window).compile()
    _COMPILED.add((self, window))
    return time.perf_counter() - start

  def _placed(self, state: ControllerState) -> tuple[ControllerState, int]:
    # Committed to one device, a fresh, updated, host (numpy) or restored state compiles alike;
    # the trainer's mesh (if any) does not apply to this small single-device program. Each
    # process of a multi-process run computes it on its own first device.
    state = jax.device_put(state, jax.local_devices()[0])
    return state, history_window(int(jax.device_get(state.count)) + 1, self.capacity)

  def mixture_weights(self, state: ControllerState) -> np.ndarray:
    """The current mixture as float64 weights summing to 1 (for `Mixture.with_weights`)."""
    return state_lib.mixture_weights(state)

  def metrics(self, state: ControllerState, config_names: Sequence[str],
              class_names: Sequence[str]) -> dict[str, float]:
    """Scalars to log after an update: val_loss/ and mixture/ per configuration; reward/ per
    class and total (the latest interval); mixture_class/ per class; controller/ diagnostics."""
    s = jax.device_get(state)
    out = {f"val_loss/{n}": float(v) for n, v in zip(config_names, s.prev_losses)}
    out.update({f"mixture/{n}": float(v) for n, v in zip(config_names, s.action)})
    by_class = np.bincount(self.classes, weights=s.action)
    out.update({f"mixture_class/{n}": float(v) for n, v in zip(class_names, by_class)})
    if s.count > 0:
      rewards = np.asarray(class_means(s.rewards[s.count - 1], self.classes))
      out.update({f"reward/{n}": float(v) for n, v in zip(class_names, rewards)})
      out["reward/total"] = float(rewards.sum())
      out["controller/model_loss"] = float(s.fit_losses[-1])
    out["controller/predicted_reward"] = float(s.predicted_reward)
    out["controller/explored"] = float(s.explored)
    return out


# The fewest history rows computed on. Each new window is a compile (7-9 s on 2 CPU cores at the
# default sizes) while fewer rows save little (an update took 1.1 s at 1 row and 1.4-2.0 s at 8,
# most of it the optimizer's passes over the reward model's 2.7M parameters), so a short run's
# first 8 evaluations share one compile.
MIN_WINDOW = 8
# (controller, window) pairs whose `update` `Controller.compile` has compiled in this process.
_COMPILED: set[tuple[Controller, int]] = set()


def history_window(rows: int, capacity: int) -> int:
  """History rows the reward model computes on: the power of two >= `rows` (at least
  `MIN_WINDOW`), at most `capacity`.

  The model is causal and its loss masks rows past `count`, so the rows after the window cannot
  change the result; skipping them makes early updates cheap (one compile per window size).
  """
  return min(capacity, max(MIN_WINDOW, 1 << max(rows - 1, 0).bit_length()))


def _push(buffer: jax.Array, full: jax.Array, index: jax.Array, row: jax.Array) -> jax.Array:
  """`buffer` with `row` written at `index`, after sliding everything up one row if `full`."""
  buffer = jnp.where(full, jnp.roll(buffer, -1, axis=0), buffer)
  return buffer.at[index].set(row)


def _learn(c: Controller, window: int, state: ControllerState, losses: jax.Array,
           key: jax.Array) -> ControllerState:
  """Appends the interval that just ended to the history and trains the reward model on it."""
  full = state.count >= c.capacity
  index = jnp.minimum(state.count, c.capacity - 1)
  history = dict(
      losses=_push(state.losses, full, index, state.prev_losses),
      actions=_push(state.actions, full, index, state.action),
      rewards=_push(state.rewards, full, index, reward(state.prev_losses, losses)),
      steps=_push(state.steps, full, index, state.prev_step),
      count=jnp.minimum(state.count + 1, c.capacity))
  rows = jnp.concatenate([history["losses"], history["actions"]], axis=-1)[:window]
  params, opt_state, fit_losses = fit.fit(
      state.params, state.opt_state, c.optimizer(), rows, history["rewards"][:window],
      history["count"], key, steps=c.train_steps, noise=c.noise)
  return state.replace(params=params, opt_state=opt_state, fit_losses=fit_losses, **history)


def _select(c: Controller, window: int, state: ControllerState, losses: jax.Array,
            step: jax.Array, key: jax.Array) -> ControllerState:
  """Chooses the next mixture: exploring or the best candidates (see `selection`)."""
  k_coin, k_explore, k_candidates = jax.random.split(key, 3)
  explore = jax.random.uniform(k_coin) < schedule_lib.explore_probability(step, c.total_steps)
  explore = explore & c.explore
  explore_mixture = selection.exploring_action(k_explore, losses, c.classes)
  mixtures = selection.candidates(k_candidates, c.num_candidates, explore, explore_mixture)
  rows = jnp.concatenate([state.losses, state.actions], axis=-1)[:window]
  carry = reward_model.history_carry(state.params, rows, state.count)
  scores = selection.score(state.params, carry, losses, mixtures, c.classes)
  action, predicted = selection.best_mixture(mixtures, scores, c.top_k)
  return state.replace(action=action, predicted_reward=predicted, explored=explore)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _update(c: Controller, state: ControllerState, losses: jax.Array, step: jax.Array,
            window: int) -> ControllerState:
  """The jitted body of `Controller.update`; `window` history rows are computed on."""
  key, k_fit, k_select = jax.random.split(state.key, 3)
  state = jax.lax.cond(state.num_updates > 0, functools.partial(_learn, c, window),
                       lambda s, *_: s, state, losses, k_fit)
  state = jax.lax.cond(step >= c.schedule.control_start, functools.partial(_select, c, window),
                       lambda s, *_: s, state, losses, step, k_select)
  return state.replace(prev_losses=losses, prev_step=step, num_updates=state.num_updates + 1,
                       key=key)
