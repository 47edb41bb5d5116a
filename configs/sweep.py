"""The paper's sweep: family x size x curriculum, one config per `<family>-<size>-<curriculum>`.

Run one (from the repo root; `--config.data.source=` must point at your copy of the Pile, JSONL
files with a `text` field, for every size but `tiny`):
    python -m birdie_jax.main --config=configs/sweep.py:hawk-1.4b-birdie \\
        --workdir=gs://BUCKET/birdie/hawk-1.4b-birdie --config.data.source='/data/pile/*.jsonl.gz'
On a TPU pod slice: `python launch/tpu_vm.py --config=configs/sweep.py:hawk-1.4b-birdie ...`.
Check memory and step time before renting one: `python -m birdie_jax.aot
--config=configs/sweep.py:hawk-1.4b-birdie --topology=v5e:16x16`.

Families: hawk, gated_ssm, griffin, transformer (`model.preset` shapes; 1.4b: the paper's Table 7).
Curricula: ntp, ul2, fixed_ratio, birdie_causal (causal models), birdie (bidirectional prefix: SSMs
split their recurrence channels, Transformers use prefix-LM masks), as in the paper's comparisons.
Sharding: ZeRO-3 style (`mesh.shape.fsdp=-1`: every device holds a slice of every parameter and
of its optimizer state); 7b also splits its wide dimensions 4 ways (`mesh.shape.tensor=4`) for
v5e-256, while v4-128 needs `--config.mesh.shape.tensor=1` (its fewer chips then hold 8 rows each,
not 32). Accelerator sizes stack their blocks (`model.scan_layers`): one block group compiles, and
the 7b configs fit v5e-256 with fsdp alone too (`python -m birdie_jax.aot` numbers in the README).
Sizes: the paper trained only 1.4B models: 2048-token rows, batch 520, 32,000 steps (34.1B tokens)
on the Pile. Here 1.4b uses batch 512 for 32,500 steps, the same 34,078,720,000 tokens with a batch
that divides power-of-two slices. The other sizes keep the paper's ~20-25 tokens per parameter;
`tiny` is a CPU smoke run on the embedded Shakespeare with a byte tokenizer.
Learning rates are GPT-3's for the size (the paper uses "Mamba's hyper-parameters", numbers not
given; Mamba's baselines follow GPT-3), with 1% linear warm-up and cosine decay to 10%.

Expected time: 6 x N x tokens FLOPs (N: all parameters at a 32k vocabulary; attention FLOPs not
counted) at an assumed 40% MFU of the topology's peak bf16 FLOP/s; `tiny` is measured (most of
birdie's time compiles the controller's reward model).
`python -m birdie_jax.aot` prints XLA's own FLOPs and memory for a config on a topology.

| config | params | tokens | topology | expected time |
| --- | --- | --- | --- | --- |
| hawk-tiny-* | 45k | 20k | 2 CPU cores | 70 s birdie, 26 s ntp (CPU seconds, measured) |
| gated_ssm-150m-* | 151M | 3.1B | v5e:4x4 (16 chips) | 0.6 h |
| griffin-150m-* | 149M | 3.1B | v5e:4x4 (16 chips) | 0.6 h |
| hawk-150m-* | 142M | 3.1B | v5e:4x4 (16 chips) | 0.6 h |
| transformer-150m-* | 152M | 3.1B | v5e:4x4 (16 chips) | 0.6 h |
| gated_ssm-400m-* | 411M | 8.4B | v5e:8x8 (64 chips) | 1.1 h |
| griffin-400m-* | 384M | 8.4B | v5e:8x8 (64 chips) | 1.1 h |
| hawk-400m-* | 396M | 8.4B | v5e:8x8 (64 chips) | 1.1 h |
| transformer-400m-* | 393M | 8.4B | v5e:8x8 (64 chips) | 1.1 h |
| gated_ssm-1.4b-* | 1325M | 34.1B | v5e:16x16 (256 chips) | 3.7 h |
| griffin-1.4b-* | 1233M | 34.1B | v5e:16x16 (256 chips) | 3.5 h |
| hawk-1.4b-* | 1089M | 34.1B | v5e:16x16 (256 chips) | 3.1 h |
| transformer-1.4b-* | 1299M | 34.1B | v5e:16x16 (256 chips) | 3.7 h |
| gated_ssm-7b-* | 7054M | 140.5B | v5e:16x16 (256 chips) | 81.9 h |
| griffin-7b-* | 6878M | 140.5B | v5e:16x16 (256 chips) | 79.8 h |
| hawk-7b-* | 7244M | 140.5B | v5e:16x16 (256 chips) | 84.1 h |
| transformer-7b-* | 6608M | 140.5B | v5e:16x16 (256 chips) | 76.7 h |
"""
from __future__ import annotations

import dataclasses
import itertools

import ml_collections

from birdie_jax.config import CURRICULA, FAMILIES, default_config
from birdie_jax.models import param_count
from birdie_jax.models.presets import PRESET_NAMES
from birdie_jax.chips import topology_chip, topology_chips

VOCAB_SIZE = 32_000  # the paper's LLaMA-2 vocabulary size; a SentencePiece BPE trained on the data
PILE_SOURCE = "data/pile/train/*.jsonl.gz"  # replace with --config.data.source=<your Pile copy>
ASSUMED_MFU = 0.4  # for the expected times in the table above


@dataclasses.dataclass(frozen=True)
class Run:
  """Length, batch, schedule and the topology the expected time is quoted for, per model size."""
  seq_len: int
  batch_size: int
  steps: int
  learning_rate: float
  topology: str
  tensor: int = 1  # tensor-parallel devices (mesh.shape.tensor); fsdp takes the rest

  @property
  def tokens(self) -> int:
    """Training tokens (context and target both counted, as in the paper)."""
    return self.seq_len * self.batch_size * self.steps


RUNS = {
    "tiny": Run(seq_len=64, batch_size=8, steps=40, learning_rate=3e-3, topology="cpu"),
    "150m": Run(seq_len=2048, batch_size=256, steps=6_000, learning_rate=6e-4, topology="v5e:4x4"),
    "400m": Run(seq_len=2048, batch_size=256, steps=16_000, learning_rate=3e-4,
                topology="v5e:8x8"),
    "1.4b": Run(seq_len=2048, batch_size=512, steps=32_500, learning_rate=2e-4,
                topology="v5e:16x16"),
    "7b": Run(seq_len=2048, batch_size=512, steps=134_000, learning_rate=1.2e-4,
              topology="v5e:16x16", tensor=4),  # hawk: 10.2 GiB of v5e's 16 (fsdp alone: 7.0)
}


def sweep_names() -> list[str]:
  """Every config name of the sweep, `<family>-<size>-<curriculum>`."""
  return [f"{family}-{size}-{curriculum}"
          for family, size, curriculum in itertools.product(FAMILIES, PRESET_NAMES, CURRICULA)]


def parse_name(name: str) -> tuple[str, str, str]:
  """(family, size, curriculum) of a sweep name; ValueError naming the choices otherwise."""
  parts = name.split("-")
  if (len(parts) != 3 or parts[0] not in FAMILIES or parts[1] not in PRESET_NAMES
      or parts[2] not in CURRICULA):
    raise ValueError(f"configs/sweep.py needs <family>-<size>-<curriculum>, got {name!r}; "
                     f"families {FAMILIES}, sizes {PRESET_NAMES}, curricula {CURRICULA}")
  return parts[0], parts[1], parts[2]


def _tiny(config: ml_collections.ConfigDict) -> None:
  """A CPU smoke run: Shakespeare, bytes, a small controller on a compressed schedule."""
  config.data.tokenizer.kind = "bytes"
  config.train.log_every = 10
  config.train.eval_every = 20
  config.train.eval_batches = 1
  config.checkpoint.every_steps = 20
  config.controller.schedule_scale = 0.01  # evaluations at 1, 2, 3, 5, 10, 15, 20, 30, 40
  config.controller.hidden = 32
  config.controller.layers = 2
  config.controller.train_steps = 50
  config.controller.num_candidates = 256


def _paper_scale(config: ml_collections.ConfigDict) -> None:
  """Accelerator settings: the Pile, a 32k BPE, bf16 compute, remat, ZeRO-3 style sharding."""
  config.data.source = PILE_SOURCE
  config.data.tokenizer.vocab_size = VOCAB_SIZE
  config.model.dtype = "bfloat16"
  config.model.remat = "full"
  config.model.scan_layers = True  # compiles one block group: minutes less per TPU compile
  config.train.log_every = 50
  config.train.eval_every = 1000
  config.train.eval_batches = 8
  config.checkpoint.every_steps = 1000
  config.mesh.shape.data = 1
  config.mesh.shape.fsdp = -1  # every device holds a shard of every parameter


def get_config(arg: str) -> ml_collections.ConfigDict:
  """The config of sweep entry `arg` (see `sweep_names()`), e.g. 'hawk-1.4b-birdie'."""
  family, size, curriculum = parse_name(arg)
  run = RUNS[size]
  config = default_config()
  config.curriculum = curriculum
  config.model.family = family
  config.model.preset = size
  config.model.bidirectional = curriculum == "birdie"
  config.train.seq_len = run.seq_len
  config.train.batch_size = run.batch_size
  config.train.steps = run.steps
  config.train.learning_rate = run.learning_rate
  config.train.warmup_steps = max(run.steps // 100, 4)
  if size == "tiny":
    _tiny(config)
  else:
    _paper_scale(config)
    config.mesh.shape.tensor = run.tensor
  return config


def num_params(family: str, size: str) -> int:
  """The preset's parameter count at VOCAB_SIZE (the formula the model tests check)."""
  model = default_config().model
  model.family, model.preset = family, size
  return param_count(model, VOCAB_SIZE)


def expected_hours(family: str, size: str) -> float:
  """Hours of 6·N·tokens FLOPs on `RUNS[size].topology` at ASSUMED_MFU (not for 'tiny')."""
  run = RUNS[size]
  chip = topology_chip(run.topology)
  flops = 6.0 * num_params(family, size) * run.tokens
  peak = topology_chips(run.topology) * chip.peak_bf16_tflops * 1e12
  return flops / (peak * ASSUMED_MFU) / 3600


def time_table() -> list[str]:
  """The rows of the docstring's table for the accelerator sizes (the test keeps them in sync)."""
  return [f"| {family}-{size}-* | {num_params(family, size) / 1e6:.0f}M | "
          f"{RUNS[size].tokens / 1e9:.1f}B | {RUNS[size].topology} "
          f"({topology_chips(RUNS[size].topology)} chips) | {expected_hours(family, size):.1f} h |"
          for size in PRESET_NAMES[1:] for family in sorted(FAMILIES)]
