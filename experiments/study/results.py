"""The study's RESULTS markdown, from the arms' run files only (`runs.py` reads them).

    python -m experiments.study.results --root=workdirs/study \\
        [--out=experiments/study/RESULTS.md]

Order: the sanity gate's statement first (evals/sanity.py, on the means over seeds of
transformer-50m-birdie for copying and transformer-50m-ntp for retrieval), then one table per
claim, each row a verdict from evals/stats.py: 'win' or 'loss' only when the two arms' 95%
intervals over seeds do not overlap, else 'inconclusive' (one seed has no interval); 'missing'
when an arm or its metric has no run files; rows on tasks a failed gate check guards are marked
uninformative. Claims, per family and size that ran:
  (a) birdie vs the best NTP (the NTP LR with the lowest Gutenberg-val perplexity): fine-tuning
      speed on phonebook and MQAR (steps to 50% / 90%, lower is better) and copying, natural text
      first
  (b) birdie (bidirectional) vs birdie_causal, same metrics
  (c) birdie (controller) vs uniform (fixed uniform mixture), same metrics and perplexity
  (d) perplexity cost: birdie's held-out perplexity against 1.05 x NTP's ('win': within 5% of NTP
      beyond the interval, 'loss': more than 5% above it beyond the interval)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
import os

from birdie_jax.evals import sanity, stats
from experiments.study import runs

Values = Mapping[str, Mapping[str, Sequence[float]]]  # group -> metric -> one value per seed
MISSING = "missing"
PPL_TARGET = 1.05  # birdie's perplexity within 5% of NTP's
PERPLEXITIES = ("perplexity/gutenberg_val", "perplexity/wikitext2_test")
SPEED = tuple(f"{t}/steps_to_{p}" for t in runs.RETRIEVAL_TASKS for p in (50, 90))
SKILLS = SPEED + runs.COPY_TASKS  # (a) and (b)
GATE_REFERENCE = "transformer-50m-ntp"
# The copy check's run: next-token models copy zero-shot only after billions of tokens (Lv et al.
# 2024, cited by the study's issue), and transformer-50m-ntp copied nothing after its 105M
# (exact match 0.000 at 16 tokens, teacher-forced accuracy no better than on unseen prose; H200,
# 2026-12-07), so the copy protocol's known-good run is the Transformer whose copying objective
# trains the format it is prompted in. Its NTP twin's copy numbers stay in claim (a).
GATE_COPY_REFERENCE = "transformer-50m-birdie"


@dataclasses.dataclass(frozen=True)
class Row:
  """One comparison: a against b on `metric`, its outcome and why."""
  a: str
  b: str
  metric: str
  outcome: str  # stats.WIN / LOSS / INCONCLUSIVE, or MISSING
  reason: str
  a_text: str = ""
  b_text: str = ""
  uninformative: bool = False


def higher_is_better(metric: str) -> bool:
  """Accuracies are better high; steps, losses and perplexities low."""
  return not ("steps_to" in metric or "perplexity" in metric or "loss" in metric)


def judge(values: Values, a: str | None, b: str | None, metric: str, *, scale_b: float = 1.0,
          gate: sanity.GateResult | None = None) -> Row:
  """`a` against `b` (groups) on `metric`; b's values times `scale_b` (the perplexity target)."""
  lacking = [name or "(no such arm)" for name in (a, b)
             if not name or not values.get(name, {}).get(metric)]
  if lacking:
    return Row(a or "-", b or "-", metric, MISSING, f"no run files give {metric} for "
               + " or ".join(lacking))
  better = higher_is_better(metric)
  verdict = stats.compare(values[a][metric], [v * scale_b for v in values[b][metric]],
                          higher_is_better=better)
  task = metric.split("/")[0]
  return Row(a, b, metric, verdict.outcome, verdict.reason, verdict.a.text(), verdict.b.text(),
             uninformative=bool(gate and gate.is_uninformative(task)))


def best_ntp(values: Values, family: str, size: str) -> str | None:
  """The NTP group of `family`-`size` with the lowest mean Gutenberg-val perplexity (val_loss when
  none has it); None without NTP runs."""
  groups = [g for g in values if g.startswith(f"{family}-{size}-ntp")]
  for metric in (PERPLEXITIES[0], "val_loss"):
    scored = [(sum(values[g][metric]) / len(values[g][metric]), g) for g in groups
              if values[g].get(metric)]
    if scored:
      return min(scored)[1]
  return groups[0] if groups else None


def gate_of(values: Values) -> sanity.GateResult:
  """The sanity gate on the reference runs' means over seeds (missing: not met): retrieval on
  the best Transformer-NTP, copying on Transformer-Birdie (GATE_COPY_REFERENCE says why)."""
  reference = best_ntp(values, "transformer", "50m") or GATE_REFERENCE

  def mean(group: str, key: str) -> float | None:
    seeds = values.get(group, {}).get(key)
    return sum(seeds) / len(seeds) if seeds else None

  return sanity.sanity_gate(mean(GATE_COPY_REFERENCE, runs.GATE_COPY),
                            mean(reference, runs.GATE_PHONEBOOK), reference=reference,
                            copy_reference=GATE_COPY_REFERENCE)


def claims(values: Values, family: str, size: str,
           gate: sanity.GateResult) -> dict[str, list[Row]]:
  """The four claims' rows for one family and size (see the module docstring)."""
  name = f"{family}-{size}"
  birdie, ntp = f"{name}-birdie", best_ntp(values, family, size)
  return {
      "(a) Birdie vs NTP: retrieval fine-tuning speed and copying":
          [judge(values, birdie, ntp, m, gate=gate) for m in SKILLS],
      "(b) bidirectional vs causal Birdie":
          [judge(values, birdie, f"{name}-birdie_causal", m, gate=gate) for m in SKILLS],
      "(c) controller (birdie) vs fixed uniform mixture":
          [judge(values, birdie, f"{name}-uniform", m, gate=gate) for m in SKILLS + PERPLEXITIES],
      f"(d) perplexity cost: Birdie within {PPL_TARGET - 1:.0%} of NTP":
          [judge(values, birdie, ntp, m, scale_b=PPL_TARGET) for m in PERPLEXITIES]}


def _cell(row: Row) -> str:
  if row.outcome == MISSING:
    return f"missing ({row.reason})"
  return f"**{row.outcome}**{' (uninformative: gate)' if row.uninformative else ''}: {row.reason}"


def table(rows: Sequence[Row], *, scaled: bool = False) -> list[str]:
  """A markdown table of comparisons."""
  b_label = f"b (x{PPL_TARGET})" if scaled else "b"
  out = [f"| a | {b_label} | metric | a | b | verdict |", "|---|---|---|---|---|---|"]
  return out + [f"| {r.a} | {r.b} | {r.metric} | {r.a_text} | {r.b_text} | {_cell(r)} |"
                for r in rows]


def arms_table(values: Values) -> list[str]:
  """Every group's metrics, mean ± 95% interval over seeds."""
  metrics = sorted({m for v in values.values() for m in v})
  out = ["| arm | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
  for group in sorted(values):
    cells = [stats.mean_interval(values[group][m]).text() if values[group].get(m) else "-"
             for m in metrics]
    out.append(f"| {group} | " + " | ".join(cells) + " |")
  return out


def runs_table(facts: Mapping[str, Mapping], unique_tokens: Mapping[str, int]) -> list[str]:
  """Each arm's run (`runs.run_facts`): card, shape, tokens, unique training tokens and epochs
  (`unique_tokens` by size), pre-training throughput and MFU."""
  out = ["| arm | card | steps x rows x length | tokens | unique training tokens | epochs | "
         "tokens/s | MFU |", "|---|---|---|---|---|---|---|---|"]
  for arm, f in facts.items():
    unique = unique_tokens.get(arm.split("-")[1])
    epochs = f"{f['tokens'] / unique:.2f}" if unique else "-"
    rate = f"{f['tokens_per_s']:,.0f}" if f["tokens_per_s"] else "-"
    mfu = f"{f['mfu']:.1%}" if f["mfu"] else "-"
    out.append(f"| {arm} | {', '.join(f['cards']) or '-'} | {f['steps']:,} x {f['rows']} x "
               f"{f['length']} | {f['tokens'] / 1e6:.1f}M | "
               f"{f'{unique / 1e6:.2f}M' if unique else '-'} | {epochs} | {rate} | {mfu} |")
  return out


def markdown(values: Values, sizes: Sequence[tuple[str, str]] = (
    ("hawk", "50m"), ("hawk", "150m"), ("transformer", "50m")),
             facts: Mapping[str, Mapping] | None = None,
             unique_tokens: Mapping[str, int] | None = None) -> str:
  """The whole RESULTS file: gate, claims per family and size with runs, every arm's numbers,
  and with `facts` (arm -> `runs.run_facts`) each run's card, tokens and throughput."""
  gate = gate_of(values)
  lines = ["# Research II: the objectives study: results", "", gate.statement, ""]
  for family, size in sizes:
    if not any(g.startswith(f"{family}-{size}-") for g in values):
      continue
    ntp_lrs = sorted(g.rsplit("-lr", 1)[1] for g in values
                     if g.startswith(f"{family}-{size}-ntp-lr"))
    lines += [f"## {family} {size}", "", f"Pre-training learning rates: NTP the best of "
              f"{len(ntp_lrs)} ({', '.join(ntp_lrs) or 'none run'}) by Gutenberg-val perplexity "
              f"({best_ntp(values, family, size) or 'none'}); every other arm at the size's one "
              "peak. A loss or an inconclusive verdict against a non-NTP arm is therefore not "
              "evidence that it cannot win at its own best learning rate.", ""]
    for title, rows in claims(values, family, size, gate).items():
      lines += [f"### {title}", ""] + table(rows, scaled=title.startswith("(d)")) + [""]
  lines += ["## Every arm (mean ± 95% interval over seeds)", ""] + arms_table(values)
  if facts:
    lines += ["", "## Runs: card, tokens, pre-training throughput", ""]
    lines += runs_table(facts, unique_tokens or {})
  return "\n".join(lines) + "\n"


def _finite(values: Values) -> dict[str, dict[str, list[float]]]:
  """`values` without non-finite numbers (a diverged run's NaN would void every interval)."""
  return {g: {m: [v for v in vs if math.isfinite(v)] for m, vs in ms.items()}
          for g, ms in values.items()}


_PROGRAM = "experiments.study.results"


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("root", "workdirs/study", "folder holding one workdir per arm")
  flags.DEFINE_string("out", "experiments/study/RESULTS.md", "the markdown to write")


def main(argv: Sequence[str]) -> None:
  """Writes the RESULTS markdown of `--root`'s arms to `--out` (and prints it); a missing root or
  an unwritable `--out` ends in one line, exit status 2, before any run file is read."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from birdie_jax import cli  # pylint: disable=g-import-not-at-top
  from birdie_jax.workdir import check_writable, write_atomic  # pylint: disable=g-import-not-at-top
  from experiments.study.config import ARMS, SIZES  # pylint: disable=g-import-not-at-top
  cli.no_arguments(_PROGRAM, argv)
  f = flags.FLAGS
  with cli.user_errors(_PROGRAM):
    cli.require(os.path.isdir(f.root), f"--root={f.root} is not a folder (of the arms' workdirs)")
    cli.require(not os.path.isdir(f.out), f"--out={f.out} is a folder, not a file")
    check_writable(os.path.dirname(os.path.abspath(f.out)), hint="--out goes there")
  facts = {arm: runs.run_facts(os.path.join(f.root, arm)) for arm in ARMS}
  text = markdown(_finite(runs.collect(f.root, ARMS)),
                  facts={arm: v for arm, v in facts.items() if v is not None},
                  unique_tokens={name: s.train_tokens for name, s in SIZES.items()})
  write_atomic(f.out, text)
  print(text, end="")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from birdie_jax import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(_PROGRAM))
