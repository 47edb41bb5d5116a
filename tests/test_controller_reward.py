"""The reward formula against an independent float64 reference of the paper's definition (§3.3,
with the original agent's sign), its saturation points, and its class normalisation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from birdie_jax.controller import reward as reward_lib

_SENSITIVITY = math.e  # the paper's r


def _paper_reward(old: float, new: float) -> float:
  """R = clip(-100 r tanh(r S dL^3), -1, 1), dL = (new - old) / old, S = sqrt(old new), in float64
  (a falling loss is rewarded; NaN, as from a zero loss, counts as 0)."""
  if old == 0.0:
    return 0.0
  relative = (new - old) / old
  value = -100.0 * _SENSITIVITY * math.tanh(_SENSITIVITY * math.sqrt(old * new) * relative**3)
  return min(1.0, max(-1.0, value))


def _saturating_drop(loss: float) -> float:
  """The relative drop d at which the reference reward for `loss` -> `loss (1 - d)` reaches 1."""
  low, high = 0.0, 0.5  # the reference rises monotonically in d on this bracket
  for _ in range(100):
    mid = (low + high) / 2
    low, high = (mid, high) if _paper_reward(loss, loss * (1 - mid)) < 1.0 else (low, mid)
  return high


def test_reward_matches_the_paper_formula_in_float64():
  olds = np.array([0.3, 0.6, 1.0, 2.0, 4.2, 4.5, 8.0])
  relative = np.linspace(-0.2, 0.2, 41)
  old = np.repeat(olds, relative.size)
  new = old * (1 + np.tile(relative, olds.size))
  expected = np.array([_paper_reward(o, n) for o, n in zip(old, new)])
  got = np.asarray(reward_lib.reward(old.astype(np.float32), new.astype(np.float32)), np.float64)
  # float32 inputs: a relative error of 1e-7 in dL moves R by at most ~1e-5 near saturation.
  np.testing.assert_allclose(got, expected, atol=1e-4)
  assert np.sum(np.abs(expected) < 1) > 100 and np.sum(expected == 1) > 10  # both regimes hit


def test_paper_example_losses_earn_similar_rewards():
  """§3.3: a drop from 4.5 to 4.2 and one from 0.6 to 0.52 earn about the same reward."""
  high, low = _paper_reward(4.5, 4.2), _paper_reward(0.6, 0.52)
  assert 0.9 < high < 1.0 and 0.9 < low < 1.0  # neither clipped: the similarity is the formula's
  assert abs(high - low) < 0.03
  for old, new, expected in ((4.5, 4.2, high), (0.6, 0.52, low)):
    assert float(reward_lib.reward(old, new)) == pytest.approx(expected, abs=1e-5)
  # The formula as printed, without the leading minus, would punish both drops.
  assert float(reward_lib.reward(4.5, 4.2)) > 0 and float(reward_lib.reward(0.6, 0.52)) > 0


@pytest.mark.parametrize("loss, percent", [(4.0, 7), (2.0, 9), (1.0, 11)])
def test_reward_saturates_where_the_reference_does(loss, percent):
  drop = _saturating_drop(loss)
  assert round(100 * drop) == percent  # the saturation points the module documents
  assert float(reward_lib.reward(loss, loss * (1 - 0.97 * drop))) < 1.0
  assert float(reward_lib.reward(loss, loss * (1 - 1.03 * drop))) == 1.0


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
