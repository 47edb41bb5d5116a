"""`model.remat`: what each residual block keeps from its forward pass for the backward pass.

  none  keep everything. Unscanned, XLA then fuses cheap elementwise ops into the backward's
        kernels instead of storing them. Scanned (`model.scan_layers`), a loop's saved values must
        all be stored, which doubled Hawk 1.4b's training memory on an H100 (109 GiB against 53),
        so there "none" keeps what fusion keeps: the matmul outputs and the outputs of the
        recurrences and of attention (tagged below), and recomputes the elementwise ops.
  dots  keep the matmul outputs (no batch dims); recompute the elementwise ops, the recurrence
        and attention.
  full  keep only the block's input: one extra forward pass of every block.
"""
from __future__ import annotations

from collections.abc import Callable

import jax

# Names the mixers give their outputs (`jax.ad_checkpoint.checkpoint_name`).
RECURRENCE_OUTPUT = "recurrence_output"
ATTENTION_OUTPUT = "attention_output"

_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_SCANNED_NONE = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names(RECURRENCE_OUTPUT, ATTENTION_OUTPUT))
REMAT_CHOICES = ("none",) + tuple(_POLICIES)


def remat_policy(remat: str, *, scanned: bool) -> Callable | None:
  """The `jax.checkpoint` policy of `model.remat` for one block, or None to store everything."""
  if remat == "none":
    return _SCANNED_NONE if scanned else None
  return _POLICIES[remat]
