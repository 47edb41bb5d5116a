"""The reward formula (known values, sign) and its class normalisation."""
import numpy as np
import pytest

from birdie_jax.controller import reward as reward_lib


@pytest.mark.parametrize("old, new, expected, tolerance", [
    (4.5, 4.2, 0.952, 0.001), (0.6, 0.5207, 0.954, 0.001),
    (0.6, 0.52, 0.95, 0.03)])  # the paper's rounded example: 0.978
def test_paper_example_losses_earn_similar_rewards(old, new, expected, tolerance):
  assert float(reward_lib.reward(old, new)) == pytest.approx(expected, abs=tolerance)


def test_equal_losses_give_zero_and_rising_losses_negative():
  assert float(reward_lib.reward(3.0, 3.0)) == 0.0
  assert float(reward_lib.reward(3.0, 3.1)) < 0.0
  assert float(reward_lib.reward(3.0, 4.0)) == -1.0  # clipped
  assert float(reward_lib.reward(3.0, 2.0)) == 1.0
  assert float(reward_lib.reward(0.0, 0.0)) == 0.0  # NaN counts as 0


def test_rewards_are_elementwise():
  rewards = np.asarray(reward_lib.reward(np.array([4.5, 3.0, 3.0]), np.array([4.2, 3.0, 3.1])))
  assert rewards.shape == (3,)
  assert rewards[0] > 0.9 and rewards[1] == 0 and rewards[2] < 0


def test_every_class_weighs_the_same():
  classes = np.array([0, 1, 1, 1, 2, 2])
  rewards = np.array([0.6, 0.3, 0.3, 0.0, 1.0, -1.0])
  np.testing.assert_allclose(reward_lib.class_means(rewards, classes), [0.6, 0.2, 0.0], atol=1e-6)
  assert float(reward_lib.total_reward(rewards, classes)) == pytest.approx(0.8)
  np.testing.assert_allclose(reward_lib.config_weights(classes), [1, 1 / 3, 1 / 3, 1 / 3, 0.5, 0.5])
