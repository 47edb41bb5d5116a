"""The sanity gate: can the protocol show a model's abilities at all? Stated first in every results
file.

    gate = sanity_gate(copy_exact_match=0.97, phonebook_digit_accuracy=0.62)
    results_md = gate.statement + "\n\n" + tables
    gate.is_uninformative("phonebook")   # True: mark the SSM-vs-Transformer phonebook rows

The reference is a Transformer: attention can copy and look up by construction, so if it does not
reach the thresholds (default 90% exact match on 16-token natural-text copies, 90% digit accuracy
on one-number phonebook after fine-tuning), the protocol (prompts, fine-tuning, model size) is
what failed, and comparisons of SSMs on those tasks say nothing about the SSMs. By default one
run (the Transformer trained on next-token prediction) answers both checks; `copy_reference`
names another run for the copy check, e.g. a Transformer trained on a copying objective when the
budget is below where next-token models start to copy zero-shot (billions of tokens, Lv et al.
2024; the study's 50m next-token Transformer copied nothing after 105M tokens). Each check names
its run in the statement. The gate takes plain numbers, so the lab and the study can use it
however they produced them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import fnmatch
import math

COPY_THRESHOLD = 0.9
PHONEBOOK_THRESHOLD = 0.9
# The tasks each check vouches for (fnmatch patterns over evaluation task names).
COPY_TASKS = ("copying", "copying_*")  # random-token, frequent-id and natural-text (copying_text)
PHONEBOOK_TASKS = ("phonebook", "mqar")
COPY_KEY = "copy_exact_match"  # keys of `gate_from_mapping`'s mapping
PHONEBOOK_KEY = "phonebook_digit_accuracy"


@dataclasses.dataclass(frozen=True)
class Check:
  """One requirement on the reference run."""

  name: str  # COPY_KEY or PHONEBOOK_KEY
  description: str  # what was measured, for the statement
  value: float | None  # None (or NaN given): not measured, which fails the check
  threshold: float
  guards: tuple[str, ...]  # task-name patterns whose comparisons it vouches for
  comparisons: str  # those comparisons in words
  reference: str = ""  # the run measured ("": the gate's reference)

  @property
  def passed(self) -> bool:
    """Measured and at least the threshold."""
    return self.value is not None and self.value >= self.threshold

  def text(self) -> str:
    """'0.970 ≥ 0.90' / '0.620 < 0.90' / 'not measured'."""
    if self.value is None:
      return "not measured"
    return f"{self.value:.3f} {'≥' if self.passed else '<'} {self.threshold:.2f}"


@dataclasses.dataclass(frozen=True)
class GateResult:
  """The gate's checks, whether all passed, and the paragraph that opens a results file."""

  checks: tuple[Check, ...]
  reference: str  # the reference arm's name

  @property
  def passed(self) -> bool:
    """Every check passed."""
    return all(c.passed for c in self.checks)

  @property
  def failed(self) -> tuple[Check, ...]:
    """The checks that did not pass."""
    return tuple(c for c in self.checks if not c.passed)

  def is_uninformative(self, task: str) -> bool:
    """Whether SSM comparisons on evaluation task `task` are uninformative (a failed check
    guards it)."""
    return any(fnmatch.fnmatchcase(task, p) for c in self.failed for p in c.guards)

  @property
  def statement(self) -> str:
    """One markdown paragraph: the verdict, each check's value against its threshold, and which
    comparisons are uninformative when a check fails."""
    runs = {c.reference or self.reference for c in self.checks}
    if len(runs) == 1:
      measured = "; ".join(f"{c.description}: {c.text()}" for c in self.checks)
      who, meets, misses = f"The {self.reference} reference run", "meets", "misses"
    else:
      measured = "; ".join(f"{c.description} ({c.reference or self.reference}): {c.text()}"
                           for c in self.checks)
      who, meets, misses = "The reference runs", "meet", "miss"
    if self.passed:
      return (f"**Sanity gate: passed.** {who} {meets} every threshold ({measured}), so the "
              "protocol can show copying and retrieval where a model has them, and the SSM "
              "comparisons below are informative.")
    lost = " and ".join(c.comparisons for c in self.failed)
    return (f"**Sanity gate: FAILED.** {who}, Transformers that can copy and retrieve by "
            f"construction, {misses} a threshold ({measured}). The protocol, not the models, "
            f"limits these tasks: the SSM comparisons on {lost} are uninformative and are "
            "marked so below; no conclusion about SSMs should be drawn from them.")


def _value(value: float | None) -> float | None:
  return None if value is None or not math.isfinite(float(value)) else float(value)


def sanity_gate(copy_exact_match: float | None, phonebook_digit_accuracy: float | None, *,
                copy_threshold: float = COPY_THRESHOLD,
                phonebook_threshold: float = PHONEBOOK_THRESHOLD,
                copy_tasks: Sequence[str] = COPY_TASKS,
                phonebook_tasks: Sequence[str] = PHONEBOOK_TASKS,
                reference: str = "Transformer-NTP",
                copy_reference: str | None = None) -> GateResult:
  """The gate on the reference run's natural-text copy exact match at 16 tokens (measured on
  `copy_reference` when given) and its one-number phonebook digit accuracy after fine-tuning
  (None or NaN: not measured, a failure)."""
  return GateResult(reference=reference, checks=(
      Check(COPY_KEY, "exact match on 16-token natural-text copies", _value(copy_exact_match),
            copy_threshold, tuple(copy_tasks), "copying (natural-text and random-token)",
            copy_reference or ""),
      Check(PHONEBOOK_KEY, "digit accuracy on one-number phonebook after fine-tuning",
            _value(phonebook_digit_accuracy), phonebook_threshold, tuple(phonebook_tasks),
            "retrieval after fine-tuning (phonebook, MQAR)")))


def gate_from_mapping(results: Mapping[str, float], **kwargs) -> GateResult:
  """`sanity_gate` on {COPY_KEY: ..., PHONEBOOK_KEY: ...} (a missing key is not measured)."""
  return sanity_gate(results.get(COPY_KEY), results.get(PHONEBOOK_KEY), **kwargs)
