"""Examples laid out as the model was trained: rows for scoring and fine-tuning, prompts to decode.

Two layouts (as `models.decoding`):
  prefix        Birdie curricula: X = [paradigm] + prompt, read in the bidirectional prefix, then
                BEGIN and the target: `X + [BEGIN] + Y[:-1]` with targets Y after X (the packer's
                layout, `data.packing`).
  continuation  next-token models: `[BEGIN] + prompt + Y[:-1]`, whose next tokens are
                `prompt + Y`; only Y is scored (a next-token model reads the prompt as text).
Rows carry the training batch's fields (`data.packing.FEATURES`); `loss_mask` is 1 on the target
tokens that count (an example's `scored` mask).
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

from birdie_jax.data.packing import FEATURES
from birdie_jax.data.packing import Row
from birdie_jax.models.decoding import LAYOUTS, prompt_batch


@dataclasses.dataclass(frozen=True)
class Layout:
  """How prompts are laid out for one run."""

  kind: str  # 'prefix' or 'continuation'
  begin_id: int
  pad_id: int

  def __post_init__(self):
    if self.kind not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.kind!r}")

  def inputs(self, prompt: np.ndarray, paradigm_id: int | None) -> np.ndarray:
    """The prompt as the model's input X: with the paradigm token first in the prefix layout."""
    prompt = np.asarray(prompt, np.int32)
    if self.kind == "prefix" and paradigm_id is not None:
      return np.concatenate([np.array([paradigm_id], np.int32), prompt])
    return prompt

  def target_start(self, prompt: np.ndarray, paradigm_id: int | None) -> int:
    """The column of a segment whose target is the target's first token."""
    return len(self.inputs(prompt, paradigm_id))

  def segment(self, prompt: np.ndarray, target: np.ndarray, paradigm_id: int | None,
              scored: np.ndarray | None = None) -> Row:
    """One example's positions: inputs, targets, loss_mask, prefix_mask (1-D, same length)."""
    x = self.inputs(prompt, paradigm_id)
    y = np.asarray(target, np.int32)
    weight = np.ones(len(y), np.float32) if scored is None else np.asarray(scored, np.float32)
    if self.kind == "prefix":
      inputs = np.concatenate([x, [self.begin_id], y[:-1]]).astype(np.int32)
      targets = np.concatenate([np.zeros(len(x), np.int32), y])
      prefix = np.arange(len(inputs)) < len(x)
    else:
      inputs = np.concatenate([[self.begin_id], x, y[:-1]]).astype(np.int32)
      targets = np.concatenate([x, y])
      prefix = np.zeros(len(inputs), bool)
    loss_mask = np.concatenate([np.zeros(len(x), np.float32), weight])
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask, "prefix_mask": prefix}

  def pack(self, segments: Sequence[Row], seq_len: int, *, one_per_row: bool = False) -> Row:
    """Segments packed greedily, in order, into (N, seq_len) rows (or one per row), padded."""
    groups: list[list[Row]] = []
    used = seq_len
    for seg in segments:
      n = len(seg["inputs"])
      if n > seq_len:
        raise ValueError(f"an example of {n} positions does not fit seq_len {seq_len}")
      if one_per_row or used + n > seq_len:
        groups.append([])
        used = 0
      groups[-1].append(seg)
      used += n
    batch = {name: np.zeros((len(groups), seq_len), dtype) for name, dtype in FEATURES.items()}
    batch["inputs"][:] = self.pad_id
    for r, group in enumerate(groups):
      start = 0
      for i, seg in enumerate(group):
        end = start + len(seg["inputs"])
        for name in ("inputs", "targets", "loss_mask", "prefix_mask"):
          batch[name][r, start:end] = seg[name]
        batch["segment_ids"][r, start:end] = i + 1
        batch["positions"][r, start:end] = np.arange(end - start)
        start = end
    return batch

  def prompts(self, prompts: Sequence[np.ndarray], paradigm_id: int | None,
              length: int) -> dict[str, np.ndarray]:
    """Left-padded (B, length) prompts for `decoding.generate` (each ends with its last token,
    BEGIN in the prefix layout)."""
    batch = prompt_batch([self.inputs(p, paradigm_id) for p in prompts], begin_id=self.begin_id,
                         pad_id=self.pad_id, layout=self.kind)
    pad = length - batch["inputs"].shape[1]
    if pad < 0:
      raise ValueError(f"a prompt of {batch['inputs'].shape[1]} positions exceeds {length}")
    fill = {"inputs": self.pad_id, "segment_ids": 0, "positions": 0, "prefix_mask": False}
    return {k: np.pad(v, ((0, 0), (pad, 0)), constant_values=fill[k]) for k, v in batch.items()}

