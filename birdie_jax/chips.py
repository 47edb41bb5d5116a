"""Accelerators' datasheet numbers: TPU generations and topology names (`v5e:16x16`) for
estimates and AOT, and the GPUs' dense bf16 peak that MFU is counted against."""
from __future__ import annotations

import dataclasses
import math

from birdie_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip's datasheet numbers (cloud.google.com/tpu/docs, per-generation pages)."""
  hbm_gib: float
  peak_bf16_tflops: float
  hbm_gb_per_s: float
  megacore: bool  # its two TensorCores run as one JAX device


TPU_CHIPS = {
    "v4": Chip(hbm_gib=32, peak_bf16_tflops=275, hbm_gb_per_s=1200, megacore=True),
    "v5e": Chip(hbm_gib=16, peak_bf16_tflops=197, hbm_gb_per_s=819, megacore=False),
    "v5p": Chip(hbm_gib=95, peak_bf16_tflops=459, hbm_gb_per_s=2765, megacore=True),
    "v6e": Chip(hbm_gib=32, peak_bf16_tflops=918, hbm_gb_per_s=1640, megacore=False),
}


# Dense bf16 TFLOP/s by a substring of `jax.Device.device_kind` (datasheets; the H200 is an H100
# with more and faster memory).
GPU_PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}


def gpu_peak_tflops(device_kind: str) -> float | None:
  """The dense bf16 peak of a GPU named `device_kind` ("NVIDIA H200"), None if not listed."""
  return next((v for k, v in GPU_PEAK_BF16_TFLOPS.items() if k in device_kind), None)


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
  """('v5e', (16, 16)) for 'v5e:16x16'; ConfigError for an unknown generation or bad grid."""
  generation, _, grid = name.partition(":")
  try:
    dims = tuple(int(n) for n in grid.split("x"))
  except ValueError:
    dims = ()
  if generation not in TPU_CHIPS or not dims or min(dims) < 1:
    raise ConfigError(f"a TPU topology looks like v5e:16x16 or v4:4x4x4 (generations "
                      f"{sorted(TPU_CHIPS)}), got {name!r}")
  return generation, dims


def topology_chips(name: str) -> int:
  """Number of chips in a topology name, e.g. 256 for 'v5e:16x16'."""
  return math.prod(parse_topology(name)[1])


def topology_chip(name: str) -> Chip:
  """The chip of a topology name."""
  return TPU_CHIPS[parse_topology(name)[0]]
