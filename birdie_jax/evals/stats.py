"""Means with 95% intervals over seeds, proportions over examples, and verdicts that respect them.

    est = mean_interval([0.61, 0.64, 0.58])        # Student t over seeds: 0.610 ± 0.075 (n=3)
    acc = wilson_interval(successes=57, total=64)   # one seed: a proportion over examples
    compare([0.61, 0.64, 0.58], [0.41, 0.45, 0.43]).outcome   # 'win'

A verdict is 'win' or 'loss' only when the two intervals do not overlap (the issue's rule: a win
only beyond the interval); anything else, and any side without an interval (one seed), is
'inconclusive'. Non-overlap of two 95% intervals is stricter than a 5% test of the difference,
which is the point: with three seeds per arm a claimed win should survive a skeptical reading.

The t quantile is computed here (A&S 26.7.3-4: the closed-form t distribution for integer degrees
of freedom, inverted by bisection) so the intervals do not depend on scipy's version or presence.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math
import statistics

WIN, LOSS, INCONCLUSIVE = "win", "loss", "inconclusive"
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean (or proportion) with its interval; `low`/`high` are None without one (n = 1)."""

  mean: float
  n: int  # seeds (mean_interval) or examples (wilson_interval)
  low: float | None = None
  high: float | None = None
  level: float = LEVEL

  @property
  def has_interval(self) -> bool:
    """Whether the estimate carries an interval (comparisons need one on both sides)."""
    return self.low is not None and self.high is not None

  @property
  def half_width(self) -> float | None:
    """Half the interval's width (for mean_interval, the `±` of `mean ± half_width`)."""
    return None if not self.has_interval else (self.high - self.low) / 2

  def text(self, digits: int = 3) -> str:
    """'0.610 ± 0.075 (n=3)', '0.610 [0.52, 0.68] (n=64)' when asymmetric, '0.610 (n=1)'."""
    mean = f"{self.mean:.{digits}f}"
    if not self.has_interval:
      return f"{mean} (n={self.n})"
    if math.isclose(self.mean - self.low, self.high - self.mean, rel_tol=1e-6, abs_tol=1e-12):
      return f"{mean} ± {self.half_width:.{digits}f} (n={self.n})"
    return f"{mean} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of comparing a with b, and the estimates it rests on."""

  outcome: str  # WIN, LOSS or INCONCLUSIVE (from a's side)
  a: Estimate
  b: Estimate
  reason: str  # one line: why this outcome


def _two_sided_mass(t: float, df: int) -> float:
  """P(|T| <= t) for Student's t with integer `df` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
  theta = math.atan(t / math.sqrt(df))
  s, c2 = math.sin(theta), math.cos(theta) ** 2
  if df % 2 == 0:  # sin(θ) (1 + 1/2 c² + 1·3/(2·4) c⁴ + ... up to c^(df-2))
    term = total = 1.0
    for j in range(1, df // 2):
      term *= c2 * (2 * j - 1) / (2 * j)
      total += term
    return s * total
  term = total = math.cos(theta)  # 2/π (θ + sin θ (c + 2/3 c³ + ... up to c^(df-2)))
  for j in range(1, (df - 1) // 2):
    term *= c2 * (2 * j) / (2 * j + 1)
    total += term
  return 2 / math.pi * (theta + (s * total if df > 1 else 0.0))


def t_quantile(df: int, level: float = LEVEL) -> float:
  """The t such that P(|T| <= t) = level for Student's t with `df` degrees of freedom."""
  if df < 1 or int(df) != df:
    raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  low, high = 0.0, 1.0
  while _two_sided_mass(high, int(df)) < level:
    high *= 2
  for _ in range(200):  # bisection to float64 resolution
    mid = (low + high) / 2
    if mid in (low, high):
      break
    low, high = (mid, high) if _two_sided_mass(mid, int(df)) < level else (low, mid)
  return (low + high) / 2


def _checked(values: Sequence[float]) -> list[float]:
  out = [float(v) for v in values]
  if not out:
    raise ValueError("no values to summarise")
  if not all(math.isfinite(v) for v in out):
    raise ValueError(f"values must be finite, got {out}")
  return out


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
  """The mean over seeds with its Student-t interval (none for a single value)."""
  xs = _checked(values)
  mean = math.fsum(xs) / len(xs)
  if len(xs) < 2:
    return Estimate(mean=mean, n=1, level=level)
  half = t_quantile(len(xs) - 1, level) * statistics.stdev(xs) / math.sqrt(len(xs))
  return Estimate(mean=mean, n=len(xs), low=mean - half, high=mean + half, level=level)


def wilson_interval(successes: float, total: int, level: float = LEVEL) -> Estimate:
  """A proportion over `total` independent examples with its Wilson score interval (which stays
  inside [0, 1] and is sensible at 0% and 100%, unlike the normal approximation)."""
  if total < 1 or not 0 <= successes <= total:
    raise ValueError(f"need 0 <= successes <= total and total >= 1, got {successes}/{total}")
  z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
  p = successes / total
  centre = (p + z * z / (2 * total)) / (1 + z * z / total)
  half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
  return Estimate(mean=p, n=total, low=max(0.0, centre - half), high=min(1.0, centre + half),
                  level=level)


def compare_estimates(a: Estimate, b: Estimate, *, higher_is_better: bool = True) -> Verdict:
  """a against b: WIN / LOSS only when their intervals do not overlap, else INCONCLUSIVE."""
  if not (a.has_interval and b.has_interval):
    return Verdict(INCONCLUSIVE, a, b, "no interval (a single seed): no verdict")
  if a.low > b.high:
    higher = True
  elif a.high < b.low:
    higher = False
  else:
    return Verdict(INCONCLUSIVE, a, b, "the intervals overlap")
  outcome = WIN if higher == higher_is_better else LOSS
  side = "above" if higher else "below"
  return Verdict(outcome, a, b, f"a's interval lies entirely {side} b's")


def compare(a_values: Sequence[float], b_values: Sequence[float], *,
            higher_is_better: bool = True, level: float = LEVEL) -> Verdict:
  """Per-seed values of arm a against arm b (see `compare_estimates`)."""
  return compare_estimates(mean_interval(a_values, level), mean_interval(b_values, level),
                           higher_is_better=higher_is_better)
