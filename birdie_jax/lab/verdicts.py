"""The lab's verdicts, computed from point results alone: the sanity gate and the issue's targets.

The targets compare causal and bidirectional models of equal width, and say each one's decode
state: a bidirectional layer decodes from its forward half of the channels (the reverse half runs
over the prefix only), so at equal width the bidirectional model holds less state (2-layer Hawk
with the conv windows: 15/16 of the causal one's with one bidirectional layer, 7/8 with both),
never more: a win is not bought with state.

Every number is the chosen learning rate's test accuracy (`result["best"]`), as mean +- 95%
t-interval over seeds (`evals.stats`). A difference "holds" only when the two intervals do not
overlap (with the margin added to the lower side where a target asks for one).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from birdie_jax.evals import stats

SANITY_THRESHOLD = 0.99  # Transformer on MQAR at every width (Zoology: attention ~1.0)
SOLVED, FAILED = 0.9, 0.5  # "solves" / "fails" a task
MARGIN = 0.2  # bidirectional beats causal by this much


def interval(values: Sequence[float]) -> tuple[float, float]:
  """(mean, half-width of the 95% Student-t interval); the half-width is inf for one value."""
  estimate = stats.mean_interval(values)
  half = estimate.half_width
  return estimate.mean, float("inf") if half is None else half


def point_key(r: Mapping) -> tuple:
  """(task, difficulty, family, layout, width) of a result."""
  p = r["point"]
  return (p["task"], p["difficulty"], p["family"], p["layout"], p["width"])


def accuracy(r: Mapping) -> tuple[float, float]:
  """(mean, 95% half-width) of a point's chosen-LR test accuracy over seeds."""
  return interval(r["best"]["test_accuracy"])


def cell(r: Mapping | None, with_state: bool = False) -> str:
  """A table cell: '0.93 ± 0.02 (1.0e-03)', with the decode state in floats '(1.0e-03; state
  448)', or a dash for a point that did not run."""
  if r is None:
    return "–"
  mean, half = accuracy(r)
  ci = "" if not np.isfinite(half) else f" ± {half:.2f}"
  state = f"; state {r['state_size']:,}" if with_state else ""
  return f"{mean:.2f}{ci} ({r['best']['learning_rate']:.1e}{state})"


def above(a: Mapping, b: Mapping, margin: float = 0.0) -> bool:
  """a's interval lies wholly above b's + margin."""
  (ma, ha), (mb, hb) = accuracy(a), accuracy(b)
  return ma - ha > mb + hb + margin


def sanity(results: list[dict]) -> tuple[bool | None, str]:
  """The causal Transformer >= 0.99 on MQAR at every width run (None: no such point). The gate is
  Zoology's known-good model, causal attention; the prefix-LM Transformer's MQAR points are
  results like any other, in the per-task tables."""
  rows = [r for r in results if r["point"]["task"] == "mqar" and
          r["point"]["family"] == "transformer" and r["point"]["layout"] == "causal"]
  if not rows:
    return None, "no causal Transformer MQAR point ran: the lab's sanity gate is **not checked**."
  low = [r for r in rows if accuracy(r)[0] < SANITY_THRESHOLD]
  cells = ", ".join(f"{r['point']['layout']} w{r['point']['width']} kv{r['point']['difficulty']}"
                    f" {accuracy(r)[0]:.3f}" for r in rows)
  if low:
    return False, (f"**FAILED**: Transformer MQAR below {SANITY_THRESHOLD} ({cells}); the "
                   "recurrent comparisons below are uninformative until it passes.")
  return True, f"passed: Transformer MQAR ≥ {SANITY_THRESHOLD} at every width ({cells})."


def by_point(results: list[dict]) -> dict[tuple, dict]:
  """Results by `point_key`."""
  return {point_key(r): r for r in results}


def disjointness_verdict(results: list[dict], family: str = "hawk") -> list[str]:
  """Per width: does the bidirectional model solve both orders where the causal one fails the
  harder (long-first) order?"""
  idx, lines = by_point(results), []
  for (task, d, fam, layout, width), r in sorted(idx.items()):
    if task != "disjoint_lf" or fam != family or layout != "causal":
      continue
    bi = [idx.get((t, d, fam, "bidirectional", width)) for t in ("disjoint_sf", "disjoint_lf")]
    if None in bi:
      continue
    causal_fails = accuracy(r)[0] < FAILED
    bi_solves = all(accuracy(b)[0] >= SOLVED for b in bi)
    verdict = "holds" if causal_fails and bi_solves and above(bi[1], r) else "does not hold"
    lines.append(f"- {family} w{width}, long set {d}: causal long-first {cell(r, True)}; "
                 f"bidirectional short-first {cell(bi[0])}, long-first {cell(bi[1], True)}: "
                 f"**{verdict}**")
  return lines or [f"- no {family} disjointness pair (causal and bidirectional) ran"]


def margin_verdict(results: list[dict], task: str, family: str = "hawk") -> list[str]:
  """At the width where causal is nearest 0.5 (of the widths run both ways): bidirectional beats
  it by >= MARGIN beyond the intervals?"""
  idx = by_point(results)
  causal = [r for k, r in idx.items() if k[0] == task and k[2] == family and k[3] == "causal"
            and (k[0], k[1], k[2], "bidirectional", k[4]) in idx]  # widths run both ways
  lines = []
  for d in sorted({r["point"]["difficulty"] for r in causal}):
    rows = [r for r in causal if r["point"]["difficulty"] == d]
    near = min(rows, key=lambda r: abs(accuracy(r)[0] - 0.5))
    width = near["point"]["width"]
    bi = idx.get((task, d, family, "bidirectional", width))
    if bi is None:
      continue
    verdict = "holds" if above(bi, near, MARGIN) else "does not hold"
    lines.append(f"- {task}:{d} {family} w{width} (causal nearest 0.5): causal "
                 f"{cell(near, True)}, bidirectional {cell(bi, True)}: **{verdict}**")
  return lines or [f"- no {family} {task} pair (causal and bidirectional) ran"]
