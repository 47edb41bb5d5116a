"""The whole controller in a simulated environment (no language model), checkpoints and the plot.

Environment: 12 configurations in 4 classes of 2, 2, 4 and 4; the first half of each class is
"fast". Configuration i has been trained on `exposure_i` (the sum of its mixture weights times 0.25
per evaluation) and its validation loss is 1 + 3 * exp(-rate_i * exposure_i), with rate 1.0 for fast
and 0.05 for slow configurations. One evaluation per step, 200 in all; a small reward model keeps
the test fast. Uniform mixtures put 0.5 of the weight on the fast configurations.
"""
import dataclasses

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from birdie_jax.controller import reward as reward_lib
from birdie_jax.controller import reward_model
from birdie_jax.controller import controller as controller_lib
from birdie_jax.controller import selection
from birdie_jax.controller.controller import Controller
from birdie_jax.controller.plot import plot_mixture
from birdie_jax.controller.settings import default_settings

SIZES = (2, 2, 4, 4)
CLASSES = np.repeat(np.arange(len(SIZES)), SIZES)
FAST = np.concatenate([np.arange(size) < size // 2 for size in SIZES])
RATES = np.where(FAST, 1.0, 0.05)
BUDGET = 0.25
EVALUATIONS = 200
CHECKPOINT_AT = 100
LEARNING = 40  # an evaluation while fast configurations still pay
# Thresholds (measured over seeds 0-2: fast weight 0.68-0.75, reward 6.7-7x uniform's).
MIN_FAST_WEIGHT = 0.6
MIN_REWARD_RATIO = 3.0


def _losses(exposure):
  return 1.0 + 3.0 * np.exp(-RATES * exposure)


def _controller():
  config = default_settings()
  config.update(hidden=32, layers=2, train_steps=50, num_candidates=256, history=64,
                schedule_scale=0.01)  # evaluations 1, 2, 3, ...: control from step 3
  return Controller.from_config(config, class_of_config=CLASSES, total_steps=EVALUATIONS)


@dataclasses.dataclass
class Run:
  rewards: np.ndarray  # total reward of each interval
  fast_weight: np.ndarray  # mixture weight on the fast configurations in each interval
  explored: np.ndarray
  states: dict  # evaluation -> state after it (some evaluations)
  losses: dict  # evaluation -> the losses passed at it


def _simulate(choose):
  """Runs the environment; `choose(step, losses) -> (mixture, state or None)`."""
  exposure = np.zeros(CLASSES.size)
  losses = _losses(exposure)
  run = Run(np.zeros(EVALUATIONS), np.zeros(EVALUATIONS), np.zeros(EVALUATIONS, bool), {}, {})
  for step in range(EVALUATIONS):
    mixture, state = choose(step, losses)
    if state is not None:
      run.explored[step] = bool(state.explored)
      if step in (1, LEARNING, CHECKPOINT_AT - 1, CHECKPOINT_AT, EVALUATIONS - 1):
        run.states[step], run.losses[step] = state, losses
    exposure = exposure + mixture * BUDGET
    new = _losses(exposure)
    run.rewards[step] = float(reward_lib.total_reward(reward_lib.reward(losses, new), CLASSES))
    run.fast_weight[step] = mixture[FAST].sum()
    losses = new
  return run


@pytest.fixture(scope="module")
def controller():
  return _controller()


@pytest.fixture(scope="module")
def runs(controller):
  uniform = controller.uniform_mixture()
  baseline = _simulate(lambda step, losses: (uniform, None))
  state = controller.init()

  def choose(step, losses):
    nonlocal state
    state = controller.update(state, losses, step)
    return controller.mixture_weights(state), state

  return baseline, _simulate(choose)


def test_controller_prefers_fast_configurations_and_beats_uniform(controller, runs):
  uniform, learned = runs
  assert np.allclose(uniform.fast_weight, 0.5)
  acting = np.arange(EVALUATIONS) >= controller.schedule.control_start
  exploiting = acting & ~learned.explored
  assert 0.15 < learned.explored[acting].mean() < 0.6
  assert learned.fast_weight[exploiting].mean() >= MIN_FAST_WEIGHT
  assert learned.rewards.sum() >= MIN_REWARD_RATIO * uniform.rewards.sum()


def test_mixture_is_uniform_per_class_before_control(controller, runs):
  _, learned = runs
  assert controller.schedule.control_start == 3
  np.testing.assert_allclose(learned.fast_weight[:3], 0.5, rtol=1e-6)
  weights = controller.mixture_weights(learned.states[1])
  np.testing.assert_allclose(np.bincount(CLASSES, weights), 0.25)


def test_reward_model_trains_and_tells_candidates_apart(controller, runs):
  _, learned = runs
  first_fit = np.asarray(learned.states[1].fit_losses)
  assert first_fit[-1] < 0.5 * first_fit[0]
  state = learned.states[LEARNING]
  rows = np.concatenate([state.losses, state.actions], -1)
  carry = reward_model.history_carry(state.params, rows, state.count)
  mixtures = selection.candidates(jax.random.PRNGKey(0), 256, np.bool_(False),
                                  controller.uniform_mixture())
  scores = selection.score(state.params, carry, state.prev_losses, mixtures, CLASSES)
  assert np.std(np.asarray(scores)) > 1e-3


def test_restored_state_chooses_the_same_next_mixture(controller, runs, tmp_path):
  _, learned = runs
  saved = learned.states[CHECKPOINT_AT - 1]
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "controller", saved)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(tmp_path / "controller", jax.eval_shape(controller.init))
  compiled = controller_lib._update._cache_size()  # pylint: disable=protected-access
  uninterrupted = learned.states[CHECKPOINT_AT]
  for state in (restored, jax.device_get(saved)):  # Orbax, and a round trip through numpy
    resumed = controller.update(state, learned.losses[CHECKPOINT_AT], CHECKPOINT_AT)
    np.testing.assert_array_equal(resumed.action, uninterrupted.action)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
      np.testing.assert_array_equal(a, b)
  assert controller_lib._update._cache_size() == compiled  # pylint: disable=protected-access


def test_metrics_and_plot(controller, runs, tmp_path):
  _, learned = runs
  state = learned.states[EVALUATIONS - 1]
  names = [f"c{i}" for i in range(CLASSES.size)]
  classes = ["a", "b", "c", "d"]
  metrics = controller.metrics(state, names, classes)
  assert sum(metrics[f"mixture/{n}"] for n in names) == pytest.approx(1.0, abs=1e-5)
  assert metrics["reward/total"] == pytest.approx(sum(metrics[f"reward/{c}"] for c in classes))
  assert {"val_loss/c0", "mixture_class/a", "controller/model_loss",
          "controller/explored"} <= metrics.keys()
  path = tmp_path / "mixture.png"
  plot_mixture(state, CLASSES, classes, path)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_full_history_slides_out_its_oldest_row():
  config = default_settings()
  config.update(hidden=8, layers=1, train_steps=2, num_candidates=8, history=3, schedule_scale=0.01)
  controller = Controller.from_config(config, class_of_config=[0, 1, 1], total_steps=100)
  state = controller.init()
  for step in range(10, 70, 10):
    state = controller.update(state, np.full(3, 4.0 - step / 100), step)
  assert int(state.count) == 3 and int(state.num_updates) == 6
  np.testing.assert_array_equal(state.steps, [30, 40, 50])  # intervals 30-40, 40-50, 50-60
  np.testing.assert_allclose(state.losses[:, 0], [3.7, 3.6, 3.5], rtol=1e-6)
  assert int(state.prev_step) == 60 and np.all(np.asarray(state.rewards) > 0)


def _small_controller(history):
  config = default_settings()
  config.update(hidden=16, layers=2, train_steps=5, num_candidates=32, history=history,
                schedule_scale=0.01)
  return Controller.from_config(config, class_of_config=[0, 1, 1, 2], total_steps=100)


def test_update_does_not_depend_on_the_history_window():
  # Rows past the window are masked out of the loss and come after it causally: computing on 8 or
  # on all 24 rows of the buffer must give the same update (at 6 rows held).
  controller = _small_controller(history=24)
  state = controller.init()
  for step in range(1, 8):
    state = controller.update(state, np.linspace(4.0, 3.0, 4) - step / 50, step)
  assert int(state.count) == 6
  losses, step = np.linspace(3.9, 2.9, 4).astype(np.float32), jax.numpy.int32(8)
  small, full = (jax.device_get(controller_lib._update(controller, state, losses, step, window))
                 for window in (8, 24))
  for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(full)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_compile_ahead_leaves_the_update_nothing_to_compile():
  controller = _small_controller(history=12)
  state = controller.init()
  assert controller.compile(state) > 0 and controller.compile(state) == 0.0
  traced = []
  listener = lambda name, *_, **__: traced.append(name)  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    jax.block_until_ready(controller.update(state, np.full(4, 3.0), 1))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert "/jax/core/compile/jaxpr_trace_duration" not in traced, traced
