"""Scoring functions shared by the evaluation tasks (pure Python / numpy, no model).

Text answers follow SQuAD's official normalisation (lower case, no punctuation, no articles, single
spaces) for F1 and "contains"; phone numbers are scored digit by digit; token tasks compare ids;
multiple choice picks the choice with the lowest loss per target token (Birdie Table 13).
Generation tasks are also scored teacher forced (`teacher_forced`): token accuracy of the argmax
predictions and the mean cross-entropy over the scored target tokens.
"""
from __future__ import annotations

from collections.abc import Sequence
import collections
import re
import string

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def f1(prediction: str, reference: str) -> float:
  """SQuAD's token-overlap F1 of the normalised prediction and reference (1 if both are empty)."""
  pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if not common:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def contains(prediction: str, reference: str) -> float:
  """1 if the normalised reference appears in the normalised prediction as whole words, else 0."""
  ref = normalize_answer(reference)
  return float(bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} ")


def exact_match(prediction: str, reference: str) -> float:
  """1 if the prediction equals the reference up to surrounding whitespace, else 0."""
  return float(prediction.strip() == reference.strip())


def first_line(text: str) -> str:
  """The first non-empty line of `text`, stripped ('' if there is none)."""
  for line in text.splitlines():
    if line.strip():
      return line.strip()
  return ""


def digit_accuracy(prediction: str, numbers: Sequence[str]) -> float:
  """Share of the digits of `numbers` that `prediction` has at the same place.

  The prediction's comma-separated parts are matched to `numbers` in order, and the digits of each
  part to the digits of its number position by position; missing parts or digits count as wrong,
  extra ones are ignored.
  """
  parts = prediction.split(",")
  correct = total = 0
  for i, number in enumerate(numbers):
    gold = [ch for ch in number if ch.isdigit()]
    guess = [ch for ch in parts[i] if ch.isdigit()] if i < len(parts) else []
    correct += sum(g == p for g, p in zip(gold, guess))
    total += len(gold)
  return correct / total if total else 0.0


def token_accuracy(predicted: np.ndarray, target: np.ndarray,
                   scored: np.ndarray | None = None) -> float:
  """Share of the scored positions where `predicted` equals `target` (all positions if None).

  `predicted` may be shorter than `target` (a generation cut short): missing positions are wrong.
  """
  target = np.asarray(target)
  scored = np.ones(len(target), bool) if scored is None else np.asarray(scored, bool)
  predicted = np.asarray(predicted)[:len(target)]
  hits = np.zeros(len(target), bool)
  hits[:len(predicted)] = predicted == target[:len(predicted)]
  return float(hits[scored].mean()) if scored.any() else 0.0


def token_exact_match(predicted: np.ndarray, target: np.ndarray,
                      scored: np.ndarray | None = None) -> float:
  """1 if every scored position of `target` is predicted right, else 0."""
  return float(token_accuracy(predicted, target, scored) == 1.0)


def teacher_forced(predictions: np.ndarray, losses: np.ndarray, target: np.ndarray,
                   scored: np.ndarray | None = None) -> dict[str, float]:
  """`tf_accuracy` (argmax predictions right) and `target_loss` (mean cross-entropy) over the
  scored target tokens (all if None) of a teacher-forced pass."""
  scored = np.ones(len(target), bool) if scored is None else np.asarray(scored, bool)
  losses = np.asarray(losses, np.float64)
  return {"tf_accuracy": token_accuracy(predictions, target, scored),
          "target_loss": float(losses[scored].mean()) if scored.any() else 0.0}


def mean_losses(choice_losses: Sequence[np.ndarray]) -> np.ndarray:
  """Each choice's loss per target token (its summed loss over its length)."""
  return np.array([float(np.mean(losses)) for losses in choice_losses])


def best_choice(choice_losses: Sequence[np.ndarray]) -> int:
  """The index of the choice with the lowest length-normalised loss (the first on ties)."""
  return int(np.argmin(mean_losses(choice_losses)))
