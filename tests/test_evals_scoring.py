"""Scoring functions against hand-computed cases."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from birdie_jax.evals import scoring


def test_normalize_answer_follows_squad():
  assert scoring.normalize_answer("  The Quick, brown FOX!  ") == "quick brown fox"
  assert scoring.normalize_answer("an apple a day") == "apple day"
  assert scoring.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_f1_hand_computed():
  # prediction tokens {paris, france}, reference {paris}: precision 1/2, recall 1 -> 2/3.
  assert scoring.f1("Paris, France", "Paris") == pytest.approx(2 / 3)
  # 2 of 3 prediction tokens in a 4-token reference: p = 2/3, r = 1/2 -> 4/7.
  assert scoring.f1("red big cat", "big red old dog") == pytest.approx(4 / 7)
  assert scoring.f1("the dog", "a cat") == 0.0
  assert scoring.f1("", "") == 1.0
  assert scoring.f1("the", "dog") == 0.0  # nothing left after normalisation


def test_contains_uses_whole_normalised_words():
  assert scoring.contains("She lives in Lisbon, I think.", "lisbon") == 1.0
  assert scoring.contains("Born in 19571", "1957") == 0.0
  assert scoring.contains("a baker", "The Baker") == 1.0
  assert scoring.contains("anything", "") == 0.0


def test_exact_match_and_first_line():
  assert scoring.exact_match(" 123-456-7890 ", "123-456-7890") == 1.0
  assert scoring.exact_match("123-456-7891", "123-456-7890") == 0.0
  assert scoring.first_line("\n\n  first answer \nsecond") == "first answer"
  assert scoring.first_line(" \n") == ""


def test_digit_accuracy_hand_computed():
  gold = ["669-174-4914", "712-000-1111"]
  assert scoring.digit_accuracy("669-174-4914, 712-000-1111", gold) == 1.0
  # first number: 9 of 10 digits (last wrong); second missing: 9 / 20.
  assert scoring.digit_accuracy("669-174-4915", gold) == pytest.approx(9 / 20)
  # a dropped digit shifts the rest of that number only: 669174491 vs 6691744914 -> 9 right,
  # and the second number is right: 19 / 20.
  assert scoring.digit_accuracy("669-174-491, 712-000-1111", gold) == pytest.approx(19 / 20)
  assert scoring.digit_accuracy("", gold) == 0.0
  # extra numbers are ignored.
  assert scoring.digit_accuracy("669-174-4914, 712-000-1111, 555", gold) == 1.0


@given(st.lists(st.text("0123456789", min_size=10, max_size=10), min_size=1, max_size=8))
def test_digit_accuracy_of_the_answer_itself_is_one(numbers):
  formatted = [f"{n[:3]}-{n[3:6]}-{n[6:]}" for n in numbers]
  assert scoring.digit_accuracy(", ".join(formatted), formatted) == 1.0


def test_token_accuracy_and_exact_match():
  target = np.array([5, 6, 7, 8])
  assert scoring.token_accuracy(np.array([5, 6, 0, 8]), target) == 0.75
  assert scoring.token_accuracy(np.array([5, 6]), target) == 0.5  # cut short
  assert scoring.token_accuracy(np.array([5, 6, 7, 8, 9, 9]), target) == 1.0  # extra ignored
  scored = np.array([False, True, False, True])
  assert scoring.token_accuracy(np.array([0, 6, 0, 0]), target, scored) == 0.5
  assert scoring.token_exact_match(np.array([0, 6, 0, 8]), target, scored) == 1.0
  assert scoring.token_exact_match(np.array([5, 6, 7, 0]), target) == 0.0


def test_length_normalised_choice():
  # Summed losses 3.0 (3 tokens), 2.0 (1 token), 4.0 (8 tokens): per token 1.0, 2.0, 0.5.
  losses = [np.array([1.0, 1.0, 1.0]), np.array([2.0]), np.full(8, 0.5)]
  np.testing.assert_allclose(scoring.mean_losses(losses), [1.0, 2.0, 0.5])
  assert scoring.best_choice(losses) == 2  # not choice 1, which has the lowest summed loss
  assert scoring.best_choice([np.array([1.0]), np.array([1.0])]) == 0
  assert math.isclose(float(scoring.mean_losses([np.array([0.2, 0.4])])[0]), 0.3)
