"""Statistics over seeds and examples (t intervals, Wilson intervals, interval verdicts) and the
sanity gate, on constructed inputs checked against independent float64 references."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from birdie_jax.evals import sanity
from birdie_jax.evals import stats

# Two-sided 95% t quantiles from a printed table (df 1..10, 20, 30).
_T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
            9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize("df", sorted(_T_TABLE))
def test_t_quantile_matches_the_table_and_scipy(df):
  assert stats.t_quantile(df) == pytest.approx(_T_TABLE[df], abs=6e-4)
  assert stats.t_quantile(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-10)
  assert stats.t_quantile(df, 0.9) == pytest.approx(scipy_stats.t.ppf(0.95, df), rel=1e-10)


def test_mean_interval_is_the_float64_student_t_interval():
  rng = np.random.default_rng(0)
  for n in (2, 3, 5, 12):
    xs = rng.normal(0.5, 0.1, n)
    est = stats.mean_interval(xs)
    ref = scipy_stats.t.interval(0.95, n - 1, loc=xs.mean(), scale=scipy_stats.sem(xs))
    assert est.n == n and est.mean == pytest.approx(xs.mean(), rel=1e-12)
    assert (est.low, est.high) == pytest.approx(ref, rel=1e-9)
    assert est.text().startswith(f"{xs.mean():.3f} ± ") and est.text().endswith(f"(n={n})")


def test_one_seed_has_no_interval_and_no_verdict():
  est = stats.mean_interval([0.7])
  assert (est.mean, est.n, est.low, est.high, est.half_width) == (0.7, 1, None, None, None)
  assert est.text() == "0.700 (n=1)"
  verdict = stats.compare([0.99], [0.01, 0.02, 0.01])
  assert verdict.outcome == stats.INCONCLUSIVE and "single seed" in verdict.reason


def test_clear_win_and_clear_loss_depend_on_the_direction():
  a, b = [0.80, 0.82, 0.81], [0.50, 0.52, 0.49]
  assert stats.compare(a, b).outcome == stats.WIN
  assert stats.compare(b, a).outcome == stats.LOSS
  # For a loss (perplexity), lower is better: the same numbers flip.
  assert stats.compare(a, b, higher_is_better=False).outcome == stats.LOSS
  assert stats.compare(b, a, higher_is_better=False).outcome == stats.WIN


def test_overlapping_intervals_are_inconclusive_even_when_the_means_differ():
  a, b = [0.60, 0.70, 0.65], [0.55, 0.66, 0.60]
  ea, eb = stats.mean_interval(a), stats.mean_interval(b)
  assert ea.mean > eb.mean and ea.low < eb.high  # a is ahead, but inside b's interval
  verdict = stats.compare(a, b)
  assert verdict.outcome == stats.INCONCLUSIVE and verdict.reason == "the intervals overlap"


def test_a_difference_just_beyond_the_interval_wins_and_just_inside_does_not():
  b = [0.0, 0.1, 0.2]  # mean 0.1, half width t(2) * 0.1 / sqrt(3)
  half = _T_TABLE[2] * 0.1 / math.sqrt(3)
  for gap, outcome in ((2 * half + 0.01, stats.WIN), (2 * half - 0.01, stats.INCONCLUSIVE)):
    a = [v + gap for v in b]
    assert stats.compare(a, b).outcome == outcome


def test_wilson_interval_matches_its_formula_and_stays_in_the_unit_interval():
  z = scipy_stats.norm.ppf(0.975)
  for k, n in ((57, 64), (0, 20), (20, 20), (1, 3)):
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    est = stats.wilson_interval(k, n)
    assert est.mean == pytest.approx(p) and est.n == n
    assert (est.low, est.high) == pytest.approx((max(0, centre - half), min(1, centre + half)))
  assert stats.wilson_interval(0, 20).low == 0 and stats.wilson_interval(20, 20).high == 1
  # A single seed's accuracies over many examples can be compared through their Wilson intervals.
  verdict = stats.compare_estimates(stats.wilson_interval(190, 200),
                                    stats.wilson_interval(100, 200))
  assert verdict.outcome == stats.WIN


@pytest.mark.parametrize("call", [lambda: stats.mean_interval([]),
                                  lambda: stats.mean_interval([1.0, float("nan")]),
                                  lambda: stats.wilson_interval(5, 4),
                                  lambda: stats.t_quantile(0)])
def test_bad_inputs_raise(call):
  with pytest.raises(ValueError):
    call()


def test_sanity_gate_passes_at_and_above_the_thresholds():
  gate = sanity.sanity_gate(0.9, 0.97)
  assert gate.passed and not gate.failed
  assert [c.value for c in gate.checks] == [0.9, 0.97]
  assert gate.statement.startswith("**Sanity gate: passed.**")
  assert "0.900 ≥ 0.90" in gate.statement and "0.970 ≥ 0.90" in gate.statement
  assert not any(gate.is_uninformative(t) for t in ("copying", "phonebook", "mqar"))
  assert "\n" not in gate.statement  # one paragraph


def test_a_failed_check_marks_only_the_comparisons_it_guards():
  gate = sanity.sanity_gate(0.95, 0.62)
  assert not gate.passed and [c.name for c in gate.failed] == [sanity.PHONEBOOK_KEY]
  assert gate.is_uninformative("phonebook") and gate.is_uninformative("mqar")
  assert not gate.is_uninformative("copying") and not gate.is_uninformative("perplexity")
  text = gate.statement
  assert text.startswith("**Sanity gate: FAILED.**") and "0.620 < 0.90" in text
  assert "phonebook, MQAR" in text and "copying (natural" not in text
  gate = sanity.sanity_gate(0.5, 0.95)
  assert all(gate.is_uninformative(t) for t in ("copying", "copying_frequent", "copying_text"))
  assert not gate.is_uninformative("selective_copying")  # a retrieval task, not a plain copy
  assert not gate.is_uninformative("phonebook") and "copying (natural-text" in gate.statement


def test_unmeasured_values_fail_and_thresholds_are_parameters():
  gate = sanity.gate_from_mapping({sanity.COPY_KEY: float("nan")})
  assert [c.value for c in gate.checks] == [None, None] and len(gate.failed) == 2
  assert gate.statement.count("not measured") == 2
  loose = sanity.gate_from_mapping({sanity.COPY_KEY: 0.5, sanity.PHONEBOOK_KEY: 0.5},
                                   copy_threshold=0.4, phonebook_threshold=0.6,
                                   reference="Hawk-NTP")
  assert [c.passed for c in loose.checks] == [True, False] and "Hawk-NTP" in loose.statement


def test_each_check_names_its_run_when_the_copy_check_has_its_own():
  gate = sanity.sanity_gate(0.2, 0.95, reference="T-NTP", copy_reference="T-Birdie")
  assert [c.name for c in gate.failed] == [sanity.COPY_KEY]
  assert "The reference runs, Transformers" in gate.statement
  assert "copies (T-Birdie): 0.200 < 0.90" in gate.statement
  assert "fine-tuning (T-NTP): 0.950 ≥ 0.90" in gate.statement
  assert "The T-NTP reference run" in sanity.sanity_gate(0.2, 0.95, reference="T-NTP").statement
