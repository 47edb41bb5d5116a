"""The configuration grid (paper A.2), the curricula, scaling to short rows, the mixture planner."""
from collections import Counter

import numpy as np
import pytest

from birdie_jax.config import default_config
from birdie_jax.config import validate_config
from birdie_jax.errors import ConfigError
from birdie_jax.objectives import grid
from birdie_jax.objectives import registry
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.objectives.mixture import SpecialIds

NUM_SENTINELS = 256
IDS = SpecialIds(paradigms={name: i for i, name in enumerate(registry.CLASSES, start=5)},
                 sentinels=np.arange(20, 20 + NUM_SENTINELS, dtype=np.int32),
                 markers={"[COPY]": 300, "[START]": 301, "[END]": 302, "[CONTEXT]": 303,
                          "[SEP]": 304, "[DONE]": 305})


def build(name="birdie", seq_len=2048, **kwargs):
  return grid.build_curriculum(name, seq_len=seq_len, num_sentinels=NUM_SENTINELS, **kwargs)


def test_birdie_grid_follows_the_paper():
  curriculum = build()
  names = curriculum.names
  assert len(names) == len(set(names)) == 96
  assert Counter(c.objective for c in curriculum.configurations) == {
      "next_token_prediction": 1, "prefix_lm": 1, "selective_copying": 16, "copying": 2,
      "deshuffling": 4, "infilling": 36, "autoencoding": 36}
  for name in ["infilling/span8_rate15_len512-1024", "infilling/span3_rate50_len1024-2048",
               "autoencoding/span32_rate85_shuffle_len768-1536", "copying/len256-2048",
               "deshuffling/pct50_len512-1024", "selective_copying/spans4_query_after_ctx768-1536",
               "next_token_prediction/fill", "prefix_lm/fill"]:
    assert name in names
  class_weights = np.bincount(curriculum.class_index, curriculum.weights)
  assert np.allclose(class_weights, 1 / 7) and curriculum.append_prob == 0.5
  infilling = curriculum.weights[curriculum.class_index == curriculum.classes.index("infilling")]
  assert np.allclose(infilling, 1 / 7 / 36)


def test_short_rows_scale_lengths():
  curriculum = build(seq_len=256)
  assert "infilling/span8_rate15_len64-128" in curriculum.names
  assert "selective_copying/spans1_query_before_ctx48-96" in curriculum.names
  selective = next(c for c in curriculum.configurations if c.objective == "selective_copying")
  assert selective.params["span_range"] == (1, 4) and selective.params["delimiter_range"] == (1, 1)
  for c in curriculum.configurations:
    lengths = registry.example_lengths(c.objective, c.params, np.array([c.lengths[1]]),
                                       paradigm=True, max_spans=NUM_SENTINELS)
    assert c.lengths[0] <= c.lengths[1] and (c.unit != grid.TOKENS or lengths[0] <= 256)
  explicit = build(seq_len=512, length_scale=0.25)
  assert "copying/len16-64" in explicit.names


def test_baselines():
  ntp = build("ntp")
  assert ntp.names == ("next_token_prediction/fill",) and ntp.append_prob is None
  ul2 = build("ul2", seq_len=256)
  assert ul2.append_prob == 0.0 and len(ul2.names) == 7
  assert dict(zip(ul2.names, ul2.weights))["infilling/span3_rate15_fill"] == pytest.approx(0.2)
  assert dict(zip(ul2.names, ul2.weights))["prefix_lm/fill"] == pytest.approx(0.2)
  fixed = build("fixed_ratio", seq_len=256)
  sums = np.bincount(fixed.class_index, fixed.weights)
  assert dict(zip(fixed.classes, sums)) == pytest.approx(grid.FIXED_RATIO)
  assert build("birdie_causal").names == build("birdie").names


def test_class_weights():
  curriculum = build(seq_len=256, class_weights="copying=0.25, infilling=0.75")
  sums = dict(zip(curriculum.classes, np.bincount(curriculum.class_index, curriculum.weights)))
  assert sums["copying"] == pytest.approx(0.25) and sums["infilling"] == pytest.approx(0.75)
  assert sums["next_token_prediction"] == 0
  for text, match in [("copying=0.5", "must sum to 1"), ("copy=1", "not a class"),
                      ("copying=-1,infilling=2", ">= 0"), ("copying", "name=number")]:
    with pytest.raises(ConfigError, match=match):
      build(seq_len=256, class_weights=text)


@pytest.mark.parametrize("seq_len,kwargs", [(16, {}), (256, dict(length_scale=1.0))])
def test_impossible_lengths_are_one_clear_error(seq_len, kwargs):
  with pytest.raises(ConfigError, match=rf"train.seq_len {seq_len} is too small") as info:
    build(seq_len=seq_len, **kwargs)
  assert "\n" not in str(info.value)


def test_config_validation_checks_the_curriculum():
  config = default_config()
  config.curriculum = "birdie"
  validate_config(config)
  config.train.seq_len = 16
  with pytest.raises(ConfigError, match="too small for curriculum birdie"):
    validate_config(config)
  config.train.seq_len = 256
  config.data.class_weights = "infilling=0.5"
  with pytest.raises(ConfigError, match="sum to 1"):
    validate_config(config)


@pytest.mark.parametrize("seq_len", [64, 256, 2048])
def test_planned_pieces_respect_ranges_and_room(seq_len):
  mixture = Mixture(build(seq_len=seq_len), IDS)
  rng = np.random.default_rng(0)
  for name, c in zip(mixture.names, mixture.curriculum.configurations):
    planner = mixture.only(name)
    for room in rng.integers(1, seq_len + 1, 30).tolist() + [seq_len]:
      tokens, _ = planner.plan(np.random.default_rng(room), room, seq_len)
      assert tokens >= 1
      length = registry.example_lengths(c.objective, c.params, np.array([tokens, tokens + 1]),
                                        paradigm=True, max_spans=NUM_SENTINELS)
      low, high = c.lengths
      if c.unit == grid.POSITIONS and low <= room:
        assert length[0] <= min(high, room) and length[1] > low
      elif c.unit == grid.TOKENS and length[0] <= room:
        assert low <= tokens <= high
      elif c.unit == grid.FILL and low <= room:
        assert length[0] <= room < length[1]


def test_weights_api():
  mixture = Mixture(build(seq_len=256), IDS)
  n = len(mixture.names)
  w = np.random.default_rng(0).dirichlet(np.ones(n))
  assert np.allclose(mixture.with_weights(w).weights, w) and np.allclose(mixture.weights,
                                                                         mixture.curriculum.weights)
  state = mixture.with_weights(w).get_state()
  assert np.array_equal(mixture.with_state(state).weights, mixture.with_weights(w).weights)
  for bad in [np.ones(n), -w, np.full(n, np.nan), w[:-1]]:
    with pytest.raises(ValueError, match="mixture weights"):
      mixture.with_weights(bad)
  other = Mixture(build("ul2", seq_len=256), IDS)
  with pytest.raises(ValueError, match="other configurations"):
    other.with_state(state)
  only = mixture.only("copying/len8-32")
  picks = {only.plan(np.random.default_rng(s), 256, 256)[1].func.__name__ for s in range(50)}
  assert picks == {"copying"}
