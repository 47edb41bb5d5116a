"""LAB.md from a sweep's result files alone: the sanity gate first, the issue's targets as verdicts
computed from the numbers, a table per task, and Zoology's plot (accuracy against decode state).

Every number is the chosen learning rate's test accuracy (teacher-forced, over the scored answer
tokens), as mean +- 95% t-interval over seeds. A difference counts ("holds") only when the two
intervals do not overlap.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import collections
import json
import os

import numpy as np

from birdie_jax.evals import stats
from birdie_jax.workdir import save_figure, write_atomic

SANITY_THRESHOLD = 0.99  # Transformer on MQAR at every width (Zoology: attention ~1.0)
SOLVED, FAILED = 0.9, 0.5  # "solves" / "fails" a task
MARGIN = 0.2  # bidirectional beats causal by this much


def load_results(workdir: str) -> list[dict]:
  """Every finished point's result."""
  folder = os.path.join(workdir, "points")
  out = []
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    if name.endswith(".json"):
      with open(os.path.join(folder, name)) as f:
        out.append(json.load(f))
  return out


def interval(values: Sequence[float]) -> tuple[float, float]:
  """(mean, half-width of the 95% Student-t interval); the half-width is inf for one value."""
  estimate = stats.mean_interval(values)
  half = estimate.half_width
  return estimate.mean, float("inf") if half is None else half


def _key(r: Mapping) -> tuple:
  p = r["point"]
  return (p["task"], p["difficulty"], p["family"], p["layout"], p["width"])


def _acc(r: Mapping) -> tuple[float, float]:
  return interval(r["best"]["test_accuracy"])


def _fmt(r: Mapping | None) -> str:
  if r is None:
    return "–"
  mean, half = _acc(r)
  ci = "" if not np.isfinite(half) else f" ± {half:.2f}"
  return f"{mean:.2f}{ci} ({r['best']['learning_rate']:.1e})"


def _above(a: Mapping, b: Mapping, margin: float = 0.0) -> bool:
  """a's interval lies wholly above b's + margin."""
  (ma, ha), (mb, hb) = _acc(a), _acc(b)
  return ma - ha > mb + hb + margin


def sanity(results: list[dict]) -> tuple[bool | None, str]:
  """Transformer >= 0.99 on MQAR at every width run (None: no such point)."""
  rows = [r for r in results if r["point"]["task"] == "mqar" and
          r["point"]["family"] == "transformer"]
  if not rows:
    return None, "no Transformer MQAR point ran: the lab's sanity gate is **not checked**."
  low = [r for r in rows if _acc(r)[0] < SANITY_THRESHOLD]
  cells = ", ".join(f"{r['point']['layout']} w{r['point']['width']} kv{r['point']['difficulty']}"
                    f" {_acc(r)[0]:.3f}" for r in rows)
  if low:
    return False, (f"**FAILED**: Transformer MQAR below {SANITY_THRESHOLD} ({cells}); the "
                   "recurrent comparisons below are uninformative until it passes.")
  return True, f"passed: Transformer MQAR ≥ {SANITY_THRESHOLD} at every width ({cells})."


def _index(results):
  return {_key(r): r for r in results}


def disjointness_verdict(results: list[dict], family: str = "hawk") -> list[str]:
  """Per width: does the bidirectional model solve both orders where the causal one fails the
  harder (long-first) order?"""
  idx, lines = _index(results), []
  for (task, d, fam, layout, width), r in sorted(idx.items()):
    if task != "disjoint_lf" or fam != family or layout != "causal":
      continue
    bi = [idx.get((t, d, fam, "bidirectional", width)) for t in ("disjoint_sf", "disjoint_lf")]
    if None in bi:
      continue
    causal_fails = _acc(r)[0] < FAILED
    bi_solves = all(_acc(b)[0] >= SOLVED for b in bi)
    verdict = "holds" if causal_fails and bi_solves and _above(bi[1], r) else "does not hold"
    lines.append(f"- {family} w{width}, long set {d}: causal long-first {_fmt(r)}; bidirectional "
                 f"short-first {_fmt(bi[0])}, long-first {_fmt(bi[1])}: **{verdict}**")
  return lines or [f"- no {family} disjointness pair (causal and bidirectional) ran"]


def margin_verdict(results: list[dict], task: str, family: str = "hawk") -> list[str]:
  """At the width where causal is nearest 0.5: bidirectional beats it by >= MARGIN beyond the
  intervals?"""
  idx = _index(results)
  causal = [r for k, r in idx.items() if k[0] == task and k[2] == family and k[3] == "causal"]
  lines = []
  for d in sorted({r["point"]["difficulty"] for r in causal}):
    rows = [r for r in causal if r["point"]["difficulty"] == d]
    near = min(rows, key=lambda r: abs(_acc(r)[0] - 0.5))
    width = near["point"]["width"]
    bi = idx.get((task, d, family, "bidirectional", width))
    if bi is None:
      continue
    verdict = "holds" if _above(bi, near, MARGIN) else "does not hold"
    lines.append(f"- {task}:{d} {family} w{width} (causal nearest 0.5): causal {_fmt(near)}, "
                 f"bidirectional {_fmt(bi)}: **{verdict}**")
  return lines or [f"- no {family} {task} pair (causal and bidirectional) ran"]


def task_tables(results: list[dict]) -> list[str]:
  """One markdown table per task:difficulty: rows family/layout, columns widths."""
  groups = collections.defaultdict(list)
  for r in results:
    groups[(r["point"]["task"], r["point"]["difficulty"])].append(r)
  lines = []
  for (task, d), rows in sorted(groups.items()):
    widths = sorted({r["point"]["width"] for r in rows})
    arms = sorted({(r["point"]["family"], r["point"]["layout"]) for r in rows})
    idx = _index(rows)
    lines += [f"### {task}:{d}", "", "| family | layout | " +
              " | ".join(f"w{w}" for w in widths) + " |",
              "|---|---|" + "---|" * len(widths)]
    for fam, layout in arms:
      cells = [_fmt(idx.get((task, d, fam, layout, w))) for w in widths]
      lines.append(f"| {fam} | {layout} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


def plot_tasks(results: list[dict], folder: str) -> list[str]:
  """Zoology's figure per task: accuracy against decode state (floats), a line per arm."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = collections.defaultdict(list)
  for r in results:
    groups[(r["point"]["task"], r["point"]["difficulty"])].append(r)
  names = []
  for (task, d), rows in sorted(groups.items()):
    fig, ax = plt.subplots(figsize=(5, 3.6))
    arms = collections.defaultdict(list)
    for r in rows:
      arms[(r["point"]["family"], r["point"]["layout"])].append(r)
    for (fam, layout), rs in sorted(arms.items()):
      rs.sort(key=lambda r: r["state_size"])
      means = np.array([_acc(r)[0] for r in rs])
      halves = np.nan_to_num(np.array([_acc(r)[1] for r in rs]), posinf=0.0)
      style = "-" if layout == "bidirectional" else "--"
      ax.errorbar([r["state_size"] for r in rs], means, yerr=halves, fmt=style + "o",
                  label=f"{fam} {layout}", capsize=2, markersize=3)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("decode state (floats per sequence)")
    ax.set_ylabel("test accuracy (best LR)")
    ax.set_title(f"{task}:{d}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    name = f"lab-{task}-{d}.png"
    save_figure(fig, os.path.join(folder, name))
    plt.close(fig)
    names.append(name)
  return names


def write_report(workdir: str, path: str, *, command: str = "", plots_folder: str = "") -> str:
  """Writes the markdown report of `workdir`'s results to `path` (plots beside it, or in
  `plots_folder`); returns the markdown."""
  results = load_results(workdir)
  folder = plots_folder or os.path.dirname(os.path.abspath(path))
  rel = os.path.relpath(folder, os.path.dirname(os.path.abspath(path)))
  devices = sorted({r["device"] for r in results})
  passed, gate = sanity(results)
  lines = ["# Mechanism lab results", "",
           "Generated by `birdie_jax.lab.report` from the sweep's result files; nothing typed by "
           "hand. Numbers: the chosen learning rate's test accuracy (teacher-forced, scored answer"
           " tokens), mean ± 95% t-interval over seeds, learning rate in brackets.", "",
           f"- device: {', '.join(devices) or 'none'}", f"- points: {len(results)}"]
  if command:
    lines.append(f"- command: `{command}`")
  settings_path = os.path.join(workdir, "settings.json")
  if os.path.exists(settings_path):
    with open(settings_path) as f:
      saved = json.load(f)
    keys = ("data_ids", "depth", "steps", "batch_size", "train_examples", "learning_rates",
            "seeds", "easier", "dtype")
    lines.append("- set-up: " + ", ".join(f"{k}={saved[k]}" for k in keys if k in saved))
  lines += ["", "## Sanity gate", "", gate, "", "## Targets", "",
            "Set disjointness: bidirectional Hawk solves both orders (≥ 0.9) where causal Hawk "
            "of equal state fails the long-first order (< 0.5):", ""]
  lines += disjointness_verdict(results)
  for task in ("phonebook_ql", "mqar_pq"):
    lines += ["", f"{task}: bidirectional Hawk beats causal Hawk by ≥ {MARGIN} where causal is "
              "nearest 0.5:", ""]
    lines += margin_verdict(results, task)
  if passed is False:
    lines += ["", "(The sanity gate failed: read these as uninformative.)"]
  lines += ["", "## Per task", ""] + task_tables(results)
  names = plot_tasks(results, folder) if results else []
  lines += [f"![{n}]({rel}/{n})" for n in names]
  lines += ["", "## Cost", "", "| point | params | state | tokens/s | compile s | train s |",
            "|---|---|---|---|---|---|"]
  for r in results:
    tps = r["tokens_per_second"]
    lines.append(f"| {r['point']['name']} | {r['params']:,} | {r['state_size']:,} | "
                 f"{'–' if tps is None else f'{tps:,.0f}'} | {r['compile_seconds']:.1f} | "
                 f"{r['train_seconds']:.1f} |")
  text = "\n".join(lines) + "\n"
  write_atomic(path, text)
  return text
