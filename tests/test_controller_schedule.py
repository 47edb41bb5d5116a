"""The evaluation schedule (paper cadence, scaling, rounding) and the exploration probability."""
import numpy as np
import pytest

from birdie_jax.controller import schedule as schedule_lib
from birdie_jax.controller.controller import Controller
from birdie_jax.controller.settings import default_settings
from birdie_jax.errors import ConfigError


def test_paper_schedule_has_37_evaluations_in_32k_steps():
  schedule = schedule_lib.make_schedule(32_000, eval_every=1000, scale=1.0)
  assert schedule.steps[:9] == (10, 50, 250, 500, 1000, 1500, 2000, 3000, 4000)
  assert schedule.steps[-1] == 32_000 and len(schedule.steps) == 37
  assert schedule.control_start == 250
  assert schedule.is_eval_step(250) and not schedule.is_eval_step(251)


def test_small_scales_keep_every_early_evaluation():
  schedule = schedule_lib.make_schedule(60, eval_every=1000, scale=0.01)
  assert schedule.steps == (1, 2, 3, 5, 10, 15, 20, 30, 40, 50, 60)
  assert schedule.control_start == 3


def test_auto_scale_follows_the_run_length():
  assert schedule_lib.resolve_scale(0.0, 3200) == pytest.approx(0.1)
  assert schedule_lib.resolve_scale(0.0, 64_000) == 1.0
  schedule = schedule_lib.make_schedule(3200, eval_every=1000)
  assert schedule.steps[:8] == (1, 5, 25, 50, 100, 150, 200, 300)
  assert schedule.steps[-1] == 3200 and schedule.control_start == 25


def test_evaluations_stop_at_the_last_step():
  assert schedule_lib.make_schedule(700, scale=1.0).steps == (10, 50, 250, 500)


def test_exploration_follows_the_original_agent():
  total = 10_000
  probability = lambda step: float(schedule_lib.explore_probability(np.int32(step), total))
  assert probability(0) == probability(499) == 1.0  # cook phase: the first 5 %
  assert probability(500) == probability(1000) == pytest.approx(0.5)
  assert probability(1000 + 3499 // 2) == pytest.approx(0.375, abs=1e-3)
  assert probability(4499) == probability(10_000) == pytest.approx(0.25)
  steps = np.arange(1000, 4500, 100)
  assert np.all(np.diff([probability(s) for s in steps]) <= 0)


@pytest.mark.parametrize("key, value, classes", [
    ("eval_every", 0, [0, 1]), ("schedule_scale", -1.0, [0, 1]), ("top_k", 0, [0, 1]),
    ("noise", 1.0, [0, 1]), ("hidden", 0, [0, 1]), ("seed", 0, [0, 2]), ("seed", 0, [])])
def test_bad_settings_are_config_errors(key, value, classes):
  config = default_settings()
  config[key] = value
  with pytest.raises(ConfigError):
    Controller.from_config(config, class_of_config=classes, total_steps=1000)


def test_history_holds_one_row_per_scheduled_evaluation():
  settings = default_settings()
  assert settings.history == 40  # fixed by default, so a resumed longer run keeps its shapes
  settings.history = 0           # 0: one row per scheduled evaluation (after the first)
  controller = Controller.from_config(settings, class_of_config=[0, 0, 1], total_steps=32_000)
  assert controller.capacity == 36 and controller.schedule.control_start == 250


def test_history_window_is_the_next_power_of_two_from_8_within_capacity():
  from birdie_jax.controller.controller import history_window
  assert [history_window(n, 40) for n in (0, 1, 2, 3, 5, 8, 9, 17, 33, 40, 41)] == [
      8, 8, 8, 8, 8, 8, 16, 32, 40, 40, 40]
  assert [history_window(n, 3) for n in (1, 3, 4)] == [3, 3, 3]
