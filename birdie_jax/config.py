"""The configuration schema: every key, its default and a one-line comment, plus validation.

Config files in `configs/` start from `default_config()` and change what their run needs, so a key
exists in exactly one place. `validate_config` rejects unknown keys, wrong types and impossible
values with one `ConfigError` line before anything is compiled.
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections
from ml_collections import config_dict

from birdie_jax.data.curriculum import run_curriculum
from birdie_jax.data.source_mixture import config_sources
from birdie_jax.data import sft_records
from birdie_jax.controller.settings import default_settings
from birdie_jax.evals import settings as eval_settings
from birdie_jax.errors import ConfigError
from birdie_jax.objectives import grid
from birdie_jax.models.remat import REMAT_CHOICES
from birdie_jax.models.presets import PRESET_NAMES, validate_model_config

CURRICULA = grid.CURRICULA  # objective mixtures, see birdie_jax/objectives/grid.py
FAMILIES = ("hawk", "gated_ssm", "griffin", "transformer")
DTYPES = ("float32", "bfloat16")

# Logical axis -> mesh axes. Params: `embed` over fsdp and sequence (ZeRO-3 style), the wide dims
# over tensor. Activations: batch rows over data and fsdp, positions over sequence.
DEFAULT_AXIS_RULES = (
    ("batch", ("data", "fsdp")),   # activations' batch dimension
    ("length", "sequence"),        # positions: sequence parallelism (ops/sequence_scan.py)
    ("embed", ("fsdp", "sequence")),  # model width on parameters
    ("act_embed", None),           # model width on activations
    ("mlp", "tensor"),             # MLP hidden width
    ("lru", "tensor"),             # recurrence width
    ("heads", "tensor"),           # attention / block-diagonal heads
    ("kv_heads", "tensor"),        # key/value heads
    ("head_dim", None),            # per-head width
    ("vocab", "tensor"),           # vocabulary
    ("conv", None),                # temporal convolution taps
    ("layers", None),              # the stacked blocks' leading axis (model.scan_layers)
)


def default_config() -> ml_collections.ConfigDict:
  """All keys with their defaults (a tiny Hawk on the embedded corpus, next-token prediction)."""
  c = ml_collections.ConfigDict()
  c.seed = 0                                 # seeds params, data order and every objective draw
  c.curriculum = "ntp"                       # ntp|ul2|fixed_ratio|uniform|birdie_causal|birdie

  c.model = ml_collections.ConfigDict()
  c.model.family = "hawk"                    # hawk | gated_ssm | griffin | transformer
  c.model.preset = ""                        # '' or tiny|150m|400m|1.4b|7b (overrides shapes)
  c.model.bidirectional = False              # Birdie: SSM channel split / prefix-LM masks
  c.model.bidirectional_every = 2            # SSMs: recurrent blocks 0, n, 2n, ... bidirectional
  c.model.width = 128                        # residual stream width
  c.model.depth = 4                          # number of residual blocks
  c.model.lru_width = 160                    # recurrence width (RG-LRU; the Gated SSM's state)
  c.model.num_heads = 4                      # attention heads; RG-LRU block-diagonal gate blocks
  c.model.num_kv_heads = 4                   # attention key/value heads (1: MQA, num_heads: MHA)
  c.model.head_dim = 32                      # attention head width
  c.model.attention_window = 128             # griffin: local attention window in tokens
  c.model.attention_every = 3                # griffin: every n-th block is attention (RRA)
  c.model.rope_base = 250_000.0              # RoPE max wavelength
  c.model.rope_fraction = 1.0                # share of each head's dims RoPE rotates (RG: 0.5)
  c.model.attention_impl = "auto"            # auto (cuDNN on GPU in bf16) | xla | cudnn
  c.model.conv_width = 4                     # temporal Conv1D taps
  c.model.mlp_expansion = 3.0                # MLP hidden width = expansion * width (8/3 or 3)
  c.model.embed_scale = "sqrt_width"         # input embedding x: sqrt_width|sqrt_width_bf16|none
  c.model.logits_soft_cap = 0.0              # c * tanh(logits / c) when > 0 (RecurrentGemma: 30)
  c.model.dtype = "float32"                  # compute: float32 | bfloat16 (params stay float32)
  c.model.scan_impl = "auto"                 # linear_scan: auto|associative|linear|chunked|pallas
  c.model.remat = "none"                     # recompute: none|full (per block)|dots (keeps matmuls)
  c.model.scan_layers = False                # stacked blocks as one scan (faster compile, less mem)
  c.model.loss_chunk = 0                     # >0: loss decodes this many positions a row at a time

  c.data = ml_collections.ConfigDict()
  c.data.source = "embedded"                 # embedded | path, dir, glob of .txt/.jsonl | tfds:name
  c.data.sources = ""                        # or a mixture: "books=0.7:/b/*.jsonl,wiki=0.3:tfds:w"
  c.data.source_options = ""                 # per source: "wiki.val_fraction=0.01,b.text_field=x"
  c.data.text_field = "text"                 # JSONL / TFDS field holding the document text
  c.data.document_separator = ""             # splits text files into documents ("": file = one)
  c.data.val_fraction = 0.02                 # share of documents held out for validation
  c.data.gap = 0                             # <gap> tokens between packed documents
  c.data.num_workers = 0                     # Grain worker processes (0: in-process)
  c.data.read_retries = 3                    # retries of a failed data read (then stop, saving)
  c.data.length_scale = 0.0                 # paper objective lengths x this (0: seq_len / 2048)
  c.data.class_weights = ""                  # start weights, e.g. "infilling=0.5,copying=0.5"
  c.data.tokenizer = ml_collections.ConfigDict()
  c.data.tokenizer.kind = "sentencepiece"    # sentencepiece (trained on first use) | bytes
  c.data.tokenizer.vocab_size = 4096         # sentencepiece vocabulary size
  c.data.tokenizer.model_path = config_dict.placeholder(str)  # existing .model file instead

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000                       # optimizer steps in total (a resumed run continues)
  c.train.batch_size = 16                    # global batch, in packed rows
  c.train.seq_len = 256                      # tokens per packed row
  c.train.learning_rate = 3e-3               # peak learning rate
  c.train.warmup_steps = 50                  # linear warm-up steps
  c.train.end_lr_ratio = 0.1                 # cosine decays to learning_rate * end_lr_ratio
  c.train.weight_decay = 0.1                 # AdamW decoupled decay (not norms, biases, RG-LRU)
  c.train.b1 = 0.9                           # AdamW beta1
  c.train.b2 = 0.95                          # AdamW beta2
  c.train.grad_clip = 1.0                    # global gradient-norm clip
  c.train.log_every = 10                     # steps between metric lines
  c.train.eval_every = 100                   # steps between validation-loss evaluations
  c.train.eval_batches = 4                   # validation batches per evaluation
  c.train.max_nonfinite_in_a_row = 5         # NaN/Inf steps (each skipped) before a rollback
  c.train.init_from = ""                     # first start: params from a RecurrentGemma ckpt dir

  c.controller = default_settings()          # Birdie's reward-driven mixture (controller/)
  c.eval = eval_settings.default_settings()  # retrieval evaluations in training (birdie_jax/evals)
  c.sft = sft_records.default_settings()     # instruction tuning (birdie_jax.finetune)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 200             # steps between checkpoints (and one at the end)
  c.checkpoint.max_to_keep = 3               # checkpoints kept on disk
  c.checkpoint.async_save = True             # write checkpoints in the background
  c.checkpoint.restore_retries = 2           # retries of a restore failing not from damage
  c.checkpoint.lock_stale_s = 600.0          # a workdir lock whose heartbeat is older is taken over

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(  # data, fsdp, sequence, tensor sizes; -1 fills
      {"data": -1, "fsdp": 1, "sequence": 1, "tensor": 1})
  c.mesh.axis_rules = DEFAULT_AXIS_RULES     # logical axis -> mesh axes

  c.resume = ml_collections.ConfigDict()
  c.resume.allow = ""                        # run.json keys a resume may change: "seed,model.dtype"
  return c


_POSITIVE_INTS = ("model.width", "model.depth", "model.lru_width", "model.num_heads",
                  "model.conv_width", "model.bidirectional_every", "model.num_kv_heads",
                  "model.head_dim", "model.attention_window", "model.attention_every",
                  "train.steps", "train.batch_size", "train.seq_len",
                  "train.log_every", "train.eval_every", "train.eval_batches",
                  "train.max_nonfinite_in_a_row",
                  "checkpoint.every_steps", "checkpoint.max_to_keep")
_CHOICES = {"curriculum": CURRICULA, "model.family": FAMILIES, "model.dtype": DTYPES,
            "model.scan_impl": ("auto", "associative", "linear", "chunked", "pallas"),
            "model.attention_impl": ("auto", "xla", "cudnn"),
            "model.remat": REMAT_CHOICES,
            "model.preset": ("",) + PRESET_NAMES,
            "data.tokenizer.kind": ("sentencepiece", "bytes")}


def _get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def _is_group(value) -> bool:
  return isinstance(value, (Mapping, ml_collections.ConfigDict))


def _check_keys(config: Mapping, reference: Mapping, prefix: str = "") -> None:
  for key in config.keys():
    if key not in reference:
      near = [k for k in reference.keys() if k[:3] == key[:3]]
      hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
      raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    if _is_group(reference[key]) and key != "shape":
      if not _is_group(config[key]):
        raise ConfigError(f"config key {prefix}{key} must be a group of keys")
      _check_keys(config[key], reference[key], f"{prefix}{key}.")
  for key in reference.keys():
    if key not in config:
      raise ConfigError(f"config is missing key {prefix}{key}")


def _check_types(config: Mapping, reference: Mapping, prefix: str = "") -> None:
  for key, ref in reference.items():
    value = config[key]
    name = f"{prefix}{key}"
    if _is_group(ref) and key != "shape":
      _check_types(value, ref, f"{name}.")
    elif isinstance(ref, bool):
      if not isinstance(value, bool):
        raise ConfigError(f"config key {name} must be true or false, got {value!r}")
    elif isinstance(ref, int):
      if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key {name} must be an integer, got {value!r}")
    elif isinstance(ref, float):
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key {name} must be a number, got {value!r}")
    elif isinstance(ref, str):
      if not isinstance(value, str):
        raise ConfigError(f"config key {name} must be a string, got {value!r}")


def _check_allow(allow: str, reference: ml_collections.ConfigDict) -> None:
  """resume.allow must name config keys (a typo would otherwise read as a refused change)."""
  for name in filter(None, (n.strip() for n in allow.split(","))):
    try:
      value = _get(reference, name)
    except (KeyError, TypeError):
      value = reference
    if _is_group(value):
      raise ConfigError(f"resume.allow names {name!r}, not a config key (e.g. 'seed,model.width')")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first problem: unknown key, wrong type or impossible value."""
  reference = default_config()
  _check_keys(config, reference)
  _check_types(config, reference)
  for dotted in _POSITIVE_INTS:
    if _get(config, dotted) <= 0:
      raise ConfigError(f"{dotted} must be positive, got {_get(config, dotted)}")
  for dotted, choices in _CHOICES.items():
    if _get(config, dotted) not in choices:
      raise ConfigError(f"{dotted} must be one of {choices}, got {_get(config, dotted)!r}")
  for dotted in ("train.learning_rate", "model.mlp_expansion", "train.grad_clip",
                 "checkpoint.lock_stale_s"):
    if _get(config, dotted) <= 0:
      raise ConfigError(f"{dotted} must be positive, got {_get(config, dotted)}")
  for dotted in ("train.warmup_steps", "train.weight_decay", "data.gap", "data.num_workers",
                 "model.loss_chunk",
                 "data.read_retries", "checkpoint.restore_retries"):
    if _get(config, dotted) < 0:
      raise ConfigError(f"{dotted} must be non-negative, got {_get(config, dotted)}")
  if not 0.0 < config.data.val_fraction < 1.0:
    raise ConfigError(f"data.val_fraction must be in (0, 1), got {config.data.val_fraction}")
  if not 0.0 <= config.train.end_lr_ratio <= 1.0:
    raise ConfigError(f"train.end_lr_ratio must be in [0, 1], got {config.train.end_lr_ratio}")
  if config.data.tokenizer.vocab_size <= 0 and config.data.tokenizer.kind == "sentencepiece":
    raise ConfigError("data.tokenizer.vocab_size must be positive")
  validate_model_config(config.model)
  if config.curriculum == "birdie_causal" and config.model.bidirectional:
    raise ConfigError("curriculum birdie_causal trains a causal model: set "
                      "model.bidirectional=False, or use curriculum=birdie")
  if config.controller.val_rows <= 0:
    raise ConfigError(f"controller.val_rows must be positive, got {config.controller.val_rows}")
  eval_settings.validate_settings(config.eval)
  _check_allow(config.resume.allow, reference)
  if not isinstance(config.data.source, str) or not config.data.source:
    raise ConfigError("data.source must be 'embedded', a path or glob, or tfds:<name>")
  if config_sources(config.data) and config.data.source != reference.data.source:
    raise ConfigError(f"set data.source ({config.data.source}) or data.sources, not both (a "
                      "mixture may hold that source as one of its entries)")
  run_curriculum(config)  # the lengths fit the rows (built once: training and evals reuse it)
