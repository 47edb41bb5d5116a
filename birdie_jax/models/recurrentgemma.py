"""RecurrentGemma checkpoints in and out: google-deepmind/recurrentgemma's JAX Griffin / Hawk
parameters <-> our `griffin` / `hawk` models, and their `GriffinConfig` <-> our `ModelConfig`.

    fields = architecture(theirs)                     # what their params say (+ a release's hypers)
    config = model_config(fields, base)               # our ModelConfig (base: dtype, scan, ...)
    ours = from_recurrentgemma(theirs, config)        # their params -> our pure dict, in the
                                                      # layout of `config` (scan_layers stacks)
    theirs = to_recurrentgemma(ours, config)          # and back; both round trips are bitwise
    rg.GriffinConfig(**griffin_fields(config, vocab_size))   # our config as theirs

Pure tree and config functions: nothing here imports `recurrentgemma` (an optional package) or
reads files (`train/init_from.py` reads a checkpoint directory and starts a run from it).

Their model against ours (recurrentgemma 1.0.1, `recurrentgemma/jax/{griffin,modules,layers}.py`):

  theirs                                      ours
  embedder.input_embedding (V, D), tied       embed.table (V, D), tied
  x * bf16(sqrt(D)) if scale_by_sqrt_dim      model.embed_scale sqrt_width_bf16 | none
  tanh soft cap of the logits                 model.logits_soft_cap
  blocks.i.temporal_pre_norm / channel_pre_   blocks.i.mixer_norm / mlp_norm (pre-norm, residual
  norm (RMSNorm, (1 + scale), eps 1e-6)       around each, the same (1 + scale) RMSNorm)
  recurrent_block.linear_y / linear_x /       mixer.gate / proj / out (gelu(gate) * lru(conv(proj)))
  linear_out
  conv_1d.w (T, W): w[T-1-k] reads x[t-k]     mixer.conv.w (T, W): w[k] reads x[t-k] (reversed)
  rg_lru.a_param, input_gate, a_gate          mixer.lru.a_param, input_gate, a_gate (same shapes)
  attention_block.proj_q (D, N*H)             mixer.q (D, N, H); proj_k, proj_v (D, H) -> k, v
                                              (D, 1, H): one key/value head (model.num_kv_heads 1)
  proj_final (N*H, D) + bias                  mixer.o (N, H, D) + o_bias
  RoPE on the first half of each head,        model.rope_fraction 0.5, model.rope_base 10000 (the
  max wavelength 10000                        same frequencies over the rotated dims)
  local attention to the token and the W      model.attention_window W + 1 (ours counts the token
  before it (attention_window_size W)         itself)
  mlp_block.ffw_up.w (2, D, E), b (2,1,1,E)   mlp.gate (w[0], b[0]) and mlp.up (w[1], b[1])
  mlp_block.ffw_down                          mlp.down
  block_types: R, R, A, R, R, A, ...          griffin, attention_every 3 (block i is attention
                                              when i % 3 == 2); all R: hawk
  final_norm                                  final_norm

Bidirectional models (`model.bidirectional`, Birdie's prefix): a bidirectional RG-LRU layer has
the same parameters as a causal one; it runs the second half of its channels right to left over
the prefix. A causal checkpoint's parameters therefore load unchanged (`from_recurrentgemma` does
not look at `bidirectional`): every channel keeps its trained projections, conv taps, gates and
decay, and only the direction in which the reverse half accumulates changes (README: why copying
beats a fresh init of those channels).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from birdie_jax.errors import ConfigError
from birdie_jax.models.layer_stack import STACKED, unstack_layers
from birdie_jax.models.lm import mlp_hidden
from birdie_jax.models.model_config import ModelConfig

RECURRENT, ATTENTION = "RECURRENT", "ATTENTION"  # their TemporalBlockType names
ROPE_BASE = 10_000.0  # their _MAX_WAVELENGTH
ROPE_FRACTION = 0.5  # they rotate the first half of each head
CONV_WIDTH = 4  # their Griffin builds every Conv1D with the default temporal width 4

# The hyperparameters their params do not hold, for the released checkpoints: recurrentgemma's
# `common.Preset` (tests/test_recurrentgemma.py checks this table against it), keyed by what the
# params do hold. A checkpoint matching none of them is taken at the run's config's word.
RELEASES: dict[str, dict[str, Any]] = {
    "RECURRENT_GEMMA_2B_V1": dict(
        width=2560, mlp_expanded_width=3 * 2560, num_heads=10, lru_width=2560, depth=26,
        griffin=True, embeddings_scale_by_sqrt_dim=True, attention_window_size=2048,
        logits_soft_cap=30.0),
    "RECURRENT_GEMMA_9B_V1": dict(
        width=4096, mlp_expanded_width=3 * 4096, num_heads=16, lru_width=4096, depth=38,
        griffin=True, embeddings_scale_by_sqrt_dim=True, attention_window_size=2048,
        logits_soft_cap=30.0),
    "GRIFFIN_PAPER_7B": dict(
        width=4096, mlp_expanded_width=3 * 4096, num_heads=32, lru_width=5632, depth=32,
        griffin=True, embeddings_scale_by_sqrt_dim=False, attention_window_size=1024,
        logits_soft_cap=0.0),
    "HAWK_PAPER_7B": dict(
        width=4096, mlp_expanded_width=3 * 4096, num_heads=32, lru_width=5632, depth=32,
        griffin=False, embeddings_scale_by_sqrt_dim=False, attention_window_size=1024,
        logits_soft_cap=0.0),
}
_SHAPE_KEYS = ("width", "mlp_expanded_width", "num_heads", "lru_width", "depth", "griffin")
HYPER_KEYS = ("embeddings_scale_by_sqrt_dim", "attention_window_size", "logits_soft_cap")

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A RecurrentGemma model as their params describe it (`GriffinConfig`'s fields, block types by
  name), plus the release it matches and that release's hyperparameters (None when it matches
  none: `embeddings_scale_by_sqrt_dim`, `attention_window_size` and `logits_soft_cap` are then
  unknown)."""
  vocab_size: int
  width: int
  mlp_expanded_width: int
  num_heads: int
  lru_width: int
  block_types: tuple[str, ...]
  conv_width: int
  release: str | None = None
  embeddings_scale_by_sqrt_dim: bool | None = None
  attention_window_size: int | None = None
  logits_soft_cap: float | None = None

  @property
  def griffin(self) -> bool:
    return ATTENTION in self.block_types

  def describe(self) -> str:
    kind = "Griffin" if self.griffin else "Hawk"
    name = f"{self.release} " if self.release else ""
    return (f"RecurrentGemma {name}({kind}, {len(self.block_types)} blocks, width {self.width}, "
            f"vocab {self.vocab_size})")


def _params(tree: Mapping[str, Any]) -> Mapping[str, Any]:
  """Their params, from params or from variables (`{"params": params}`, how they save them)."""
  return tree["params"] if "params" in tree and "embedder" not in tree else tree


def _num_blocks(theirs: Mapping[str, Any]) -> int:
  n = 0
  while f"blocks.{n}" in theirs:
    n += 1
  if not n or any(k.startswith("blocks.") and k not in {f"blocks.{i}" for i in range(n)}
                  for k in theirs):
    raise ConfigError(f"not RecurrentGemma params: blocks.0 .. blocks.N expected, got keys "
                      f"{sorted(theirs)[:6]}")
  return n


def is_recurrentgemma_params(tree: Mapping[str, Any]) -> bool:
  """Whether `tree` (params or variables, arrays or shapes) has RecurrentGemma's top level."""
  params = _params(tree)
  return isinstance(params, Mapping) and "embedder" in params and "blocks.0" in params


def architecture(tree: Mapping[str, Any]) -> Architecture:
  """The model their params (or `{"params": ...}`; arrays or anything with `.shape`) describe.

  Their params hold every shape; a checkpoint whose shapes are a release's (`RELEASES`) also gets
  that release's embedding scale, attention window and logit soft cap."""
  p = _params(tree)
  if not is_recurrentgemma_params(p):
    raise ConfigError(f"not RecurrentGemma params: expected 'embedder' and 'blocks.0', got keys "
                      f"{sorted(p)[:6]}")
  vocab, width = p["embedder"]["input_embedding"].shape
  types, lru_width, num_heads, conv_width = [], None, None, CONV_WIDTH
  for i in range(_num_blocks(p)):
    block = p[f"blocks.{i}"]
    if "recurrent_block" in block:
      types.append(RECURRENT)
      heads, head, _ = block["recurrent_block"]["rg_lru"]["a_gate"]["w"].shape
      lru_width, num_heads = heads * head, heads
      conv_width = block["recurrent_block"]["conv_1d"]["w"].shape[0]
    elif "attention_block" in block:
      types.append(ATTENTION)
      num_heads = width // block["attention_block"]["proj_k"]["kernel"].shape[1]
    else:
      raise ConfigError(f"RecurrentGemma block {i} is neither recurrent nor attention: "
                        f"{sorted(block)}")
  arch = Architecture(vocab_size=int(vocab), width=int(width),
                      mlp_expanded_width=int(p["blocks.0"]["mlp_block"]["ffw_up"]["w"].shape[-1]),
                      num_heads=int(num_heads), lru_width=int(lru_width or width),
                      block_types=tuple(types), conv_width=int(conv_width))
  for name, release in RELEASES.items():
    shapes = {"depth": len(types), "griffin": arch.griffin, **dataclasses.asdict(arch)}
    if all(shapes[k] == release[k] for k in _SHAPE_KEYS):
      return dataclasses.replace(arch, release=name, **{k: release[k] for k in HYPER_KEYS})
  return arch


def release_architecture(name: str, vocab_size: int = 256_000) -> Architecture:
  """The `Architecture` of the release `name` (a key of `RELEASES`; their vocabulary: 256k)."""
  if name not in RELEASES:
    raise ConfigError(f"RecurrentGemma release must be one of {sorted(RELEASES)}, got {name!r}")
  r = RELEASES[name]
  types = tuple(ATTENTION if r["griffin"] and i % 3 == 2 else RECURRENT for i in range(r["depth"]))
  return Architecture(vocab_size=vocab_size, width=r["width"],
                      mlp_expanded_width=r["mlp_expanded_width"], num_heads=r["num_heads"],
                      lru_width=r["lru_width"], block_types=types, conv_width=CONV_WIDTH,
                      release=name, **{k: r[k] for k in HYPER_KEYS})


def griffin_architecture(griffin_config: Any) -> Architecture:
  """An `Architecture` from their `GriffinConfig` (or a mapping of its fields)."""
  fields = griffin_config._asdict() if hasattr(griffin_config, "_asdict") else dict(griffin_config)
  types = tuple(getattr(t, "name", t) for t in fields["block_types"])
  return Architecture(
      vocab_size=fields["vocab_size"], width=fields["width"],
      mlp_expanded_width=fields["mlp_expanded_width"], num_heads=fields["num_heads"],
      lru_width=fields.get("lru_width") or fields["width"], block_types=types,
      conv_width=CONV_WIDTH,
      embeddings_scale_by_sqrt_dim=fields["embeddings_scale_by_sqrt_dim"],
      attention_window_size=fields["attention_window_size"],
      logits_soft_cap=float(fields["logits_soft_cap"]))


def _attention_every(types: tuple[str, ...]) -> int:
  """n such that block i is attention exactly when i % n == n - 1 (ours); ConfigError if none."""
  first = types.index(ATTENTION)
  every = first + 1
  if any((t == ATTENTION) != (i % every == every - 1) for i, t in enumerate(types)):
    pattern = "".join(t[0] for t in types)
    raise ConfigError(f"RecurrentGemma block pattern {pattern} is not ours (attention exactly at "
                      f"blocks n-1, 2n-1, ...): it cannot be converted")
  return every


def model_config(arch: Architecture, base: ModelConfig) -> ModelConfig:
  """Our ModelConfig of `arch`; what their model does not fix (dtype, scan and remat choices,
  bidirectional, and the attention keys of a Hawk) comes from `base`.

  ConfigError if `arch` lacks the hyperparameters its params do not hold (a checkpoint of no
  known release: give them with `dataclasses.replace`)."""
  missing = [k for k in HYPER_KEYS if getattr(arch, k) is None]
  if missing:
    raise ConfigError(f"{arch.describe()} is no known release: its {', '.join(missing)} "
                      f"are not in its params")
  expansion = arch.mlp_expanded_width / arch.width
  if int(round(expansion * arch.width)) != arch.mlp_expanded_width:
    raise ConfigError(f"MLP width {arch.mlp_expanded_width} is not round(x * {arch.width})")
  scale = "sqrt_width_bf16" if arch.embeddings_scale_by_sqrt_dim else "none"
  shape = dict(preset="", width=arch.width, depth=len(arch.block_types), lru_width=arch.lru_width,
               num_heads=arch.num_heads, conv_width=arch.conv_width, mlp_expansion=expansion,
               embed_scale=scale, logits_soft_cap=float(arch.logits_soft_cap),
               attention_window=arch.attention_window_size + 1)  # a Hawk's: unused, kept
  if not arch.griffin:
    return dataclasses.replace(base, family="hawk", **shape)
  if arch.width % arch.num_heads:
    raise ConfigError(f"width {arch.width} is not a multiple of num_heads {arch.num_heads}")
  return dataclasses.replace(
      base, family="griffin", num_kv_heads=1, head_dim=arch.width // arch.num_heads,
      attention_every=_attention_every(arch.block_types), rope_base=ROPE_BASE,
      rope_fraction=ROPE_FRACTION, **shape)


def architecture_keys(config: ModelConfig) -> tuple[str, ...]:
  """The ModelConfig fields that decide a `config.family` model's parameters and function (the
  rest: dtype, implementations, and `bidirectional`, which loads a causal checkpoint unchanged)."""
  keys = ("family", "width", "depth", "lru_width", "num_heads", "conv_width", "mlp_expansion",
          "embed_scale", "logits_soft_cap")
  if config.family == "griffin":
    keys += ("attention_every", "num_kv_heads", "head_dim", "attention_window", "rope_base",
             "rope_fraction")
  return keys


def mismatches(run: ModelConfig, expected: ModelConfig) -> list[tuple[str, Any, Any]]:
  """(key, run's value, expected value) for each architecture key where `run` differs; the MLP
  expansion is compared by the hidden width it gives at the expected width (a differing width is
  reported once, as the width)."""
  out = []
  for key in architecture_keys(expected):
    a, b = getattr(run, key), getattr(expected, key)
    at_width = dataclasses.replace(run, width=expected.width)
    same = (mlp_hidden(at_width) == mlp_hidden(expected) if key == "mlp_expansion" else a == b)
    if not same:
      out.append((key, a, b))
  return out


def griffin_fields(config: ModelConfig, vocab_size: int) -> dict[str, Any]:
  """`GriffinConfig` keyword arguments for our `config` (block types by name: map them with
  `recurrentgemma.common.TemporalBlockType[name]`). ConfigError for a model theirs cannot run:
  another family, a bidirectional model (theirs is causal), several key/value heads, a head
  width other than width / num_heads, RoPE other than theirs, a conv width other than 4, or an
  embedding scale sqrt(width) that bfloat16 does not hold exactly."""
  def need(ok: bool, what: str) -> None:
    if not ok:
      raise ConfigError(f"a RecurrentGemma model cannot express {what}")

  need(config.family in ("hawk", "griffin"), f"model.family {config.family!r}")
  need(not config.bidirectional, "model.bidirectional (their model is causal)")
  need(config.conv_width == CONV_WIDTH, f"model.conv_width {config.conv_width} (theirs: 4)")
  scale = config.embed_scale
  if scale == "sqrt_width":
    root = np.float32(math.sqrt(config.width))
    exact = float(root) == float(ml_dtypes.bfloat16(root))
    need(exact, f"model.embed_scale 'sqrt_width' at width {config.width} (theirs rounds "
                f"sqrt(width) to bfloat16: use 'sqrt_width_bf16')")
  griffin = config.family == "griffin"
  if griffin:
    need(config.num_kv_heads == 1, f"model.num_kv_heads {config.num_kv_heads} (theirs: 1)")
    need(config.head_dim * config.num_heads == config.width,
         f"model.head_dim {config.head_dim} != width / num_heads")
    need(config.rope_base == ROPE_BASE and config.rope_fraction == ROPE_FRACTION,
         f"RoPE base {config.rope_base:g}, fraction {config.rope_fraction:g} (theirs: 10000, 0.5)")
    need(config.attention_window >= 2, f"model.attention_window {config.attention_window}")
  types = tuple(ATTENTION if griffin and i % config.attention_every == config.attention_every - 1
                else RECURRENT for i in range(config.depth))
  return dict(vocab_size=vocab_size, width=config.width, mlp_expanded_width=mlp_hidden(config),
              num_heads=config.num_heads, block_types=types,
              embeddings_scale_by_sqrt_dim=scale != "none",
              attention_window_size=config.attention_window - 1,
              logits_soft_cap=config.logits_soft_cap, lru_width=config.lru_width)


# ## Parameter trees. One block at a time, each direction the other's exact inverse.

def _block_from(theirs: Mapping[str, Any]) -> Params:
  out = {"mixer_norm": {"scale": theirs["temporal_pre_norm"]["scale"]},
         "mlp_norm": {"scale": theirs["channel_pre_norm"]["scale"]}}
  up, down = theirs["mlp_block"]["ffw_up"], theirs["mlp_block"]["ffw_down"]
  out["mlp"] = {"gate": {"kernel": up["w"][0], "bias": up["b"][0, 0, 0]},
                "up": {"kernel": up["w"][1], "bias": up["b"][1, 0, 0]},
                "down": {"kernel": down["kernel"], "bias": down["bias"]}}
  if "recurrent_block" in theirs:
    r = theirs["recurrent_block"]
    lru = r["rg_lru"]
    out["mixer"] = {
        "gate": dict(r["linear_y"]), "proj": dict(r["linear_x"]), "out": dict(r["linear_out"]),
        "conv": {"w": r["conv_1d"]["w"][::-1], "b": r["conv_1d"]["b"]},
        "lru": {"a_param": lru["a_param"], "input_gate": dict(lru["input_gate"]),
                "a_gate": dict(lru["a_gate"])}}
  else:
    a = theirs["attention_block"]
    width, heads_x_dim = a["proj_q"]["kernel"].shape
    head_dim = a["proj_k"]["kernel"].shape[1]
    out["mixer"] = {
        "q": a["proj_q"]["kernel"].reshape(width, heads_x_dim // head_dim, head_dim),
        "k": a["proj_k"]["kernel"].reshape(width, 1, head_dim),
        "v": a["proj_v"]["kernel"].reshape(width, 1, head_dim),
        "o": a["proj_final"]["kernel"].reshape(heads_x_dim // head_dim, head_dim, width),
        "o_bias": a["proj_final"]["bias"]}
  return out


def _stack(xp, a, b, axis_shape):
  return xp.stack([a, b]).reshape(axis_shape)


def _block_to(ours: Mapping[str, Any]) -> Params:
  mlp, mixer = ours["mlp"], ours["mixer"]
  xp = _array_module(mlp["gate"]["kernel"])
  hidden = mlp["gate"]["bias"].shape[0]
  out = {"temporal_pre_norm": {"scale": ours["mixer_norm"]["scale"]},
         "channel_pre_norm": {"scale": ours["mlp_norm"]["scale"]},
         "mlp_block": {
             "ffw_up": {"w": xp.stack([mlp["gate"]["kernel"], mlp["up"]["kernel"]]),
                        "b": _stack(xp, mlp["gate"]["bias"], mlp["up"]["bias"],
                                    (2, 1, 1, hidden))},
             "ffw_down": {"kernel": mlp["down"]["kernel"], "bias": mlp["down"]["bias"]}}}
  if "lru" in mixer:
    lru = mixer["lru"]
    out["recurrent_block"] = {
        "linear_y": dict(mixer["gate"]), "linear_x": dict(mixer["proj"]),
        "linear_out": dict(mixer["out"]),
        "conv_1d": {"w": mixer["conv"]["w"][::-1], "b": mixer["conv"]["b"]},
        "rg_lru": {"a_param": lru["a_param"], "input_gate": dict(lru["input_gate"]),
                   "a_gate": dict(lru["a_gate"])}}
  else:
    width, heads, head_dim = mixer["q"].shape
    if mixer["k"].shape[1] != 1:
      raise ConfigError(f"a RecurrentGemma attention block has one key/value head, not "
                        f"{mixer['k'].shape[1]}")
    out["attention_block"] = {
        "proj_q": {"kernel": mixer["q"].reshape(width, heads * head_dim)},
        "proj_k": {"kernel": mixer["k"].reshape(width, head_dim)},
        "proj_v": {"kernel": mixer["v"].reshape(width, head_dim)},
        "proj_final": {"kernel": mixer["o"].reshape(heads * head_dim, width),
                       "bias": mixer["o_bias"]}}
  return out


def _array_module(x):
  """numpy for host arrays, jax.numpy for jax arrays (so neither moves between them)."""
  return np if isinstance(x, np.ndarray) else jnp


def from_recurrentgemma(tree: Mapping[str, Any], config: ModelConfig) -> Params:
  """Their params (or `{"params": ...}`) as our model's pure-dict params, stacked as
  `config.scan_layers` stacks them (`layer_stack`); the arrays keep their dtype.

  The layout follows their params; `config` decides only the stacking, so check it against
  `architecture(tree)` first (`mismatches`)."""
  p = _params(tree)
  blocks = {i: _block_from(p[f"blocks.{i}"]) for i in range(_num_blocks(p))}
  ours = {"embed": {"table": p["embedder"]["input_embedding"]},
          "final_norm": {"scale": p["final_norm"]["scale"]},
          "blocks": {"tail": blocks}}
  return stack_layers(ours, config) if config.scan_layers else ours


def to_recurrentgemma(params: Mapping[str, Any], config: ModelConfig | None = None) -> Params:
  """Our pure-dict params (stacked or not) as their params tree (without the `{"params": ...}`
  wrapper their checkpoints add). `config`, when given, must be one their model can run
  (`griffin_fields`)."""
  if config is not None:
    griffin_fields(config, params["embed"]["table"].shape[0])
  params = unstack_layers(dict(params))
  tail = params["blocks"]["tail"]
  theirs = {"embedder": {"input_embedding": params["embed"]["table"]},
            "final_norm": {"scale": params["final_norm"]["scale"]}}
  theirs.update({f"blocks.{i}": _block_to(tail[i]) for i in range(len(tail))})
  return theirs


def stack_layers(params: Params, config: ModelConfig) -> Params:
  """Unstacked params (`blocks.tail` only) in the layout of the `config.scan_layers` model
  (`layer_stack.BlockStack`); the inverse of `layer_stack.unstack_layers`."""
  from birdie_jax.models import build_model  # pylint: disable=g-import-not-at-top (its package)

  vocab, _ = params["embed"]["table"].shape
  abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(
      lambda: build_model(config, vocab, rngs=nnx.Rngs(0)))))
  stacked = abstract["blocks"].get(STACKED)
  if not stacked:
    return params
  tail = params["blocks"]["tail"]
  period, repeats = len(stacked), jax.tree.leaves(stacked)[0].shape[0]
  xp = _array_module(params["embed"]["table"])
  blocks = {STACKED: {j: jax.tree.map(lambda *a: xp.stack(a),
                                      *[tail[r * period + j] for r in range(repeats)])
                      for j in range(period)}}
  left = {i: tail[repeats * period + i] for i in range(len(tail) - repeats * period)}
  if left:
    blocks["tail"] = left
  return {**params, "blocks": blocks}


def extend_vocab(params: Params, vocab_size: int, *, seed: int) -> Params:
  """`params` with the embedding grown to `vocab_size` rows: the first rows as they are, each new
  row (Birdie's reserved tokens appended to their tokenizer) the mean of the old rows plus
  Gaussian noise of 1/100 of their per-dimension standard deviation (seeded).

  The mean keeps a new token's logit at the average token's, so the released model's
  predictions over its own vocabulary barely move (a random row of the old rows' scale would
  give each new token an arbitrary logit); the noise tells the new tokens apart as inputs
  (256 sentinels that embed identically could not be distinguished), and training moves them."""
  table = np.asarray(params["embed"]["table"])
  old = table.shape[0]
  if vocab_size < old:
    raise ConfigError(f"the run's vocabulary ({vocab_size}) is smaller than the checkpoint's "
                      f"({old}): use the checkpoint's tokenizer")
  if vocab_size == old:
    return params
  rows = table.astype(np.float64)
  mean, std = rows.mean(axis=0), rows.std(axis=0)
  noise = np.random.default_rng(seed).standard_normal((vocab_size - old, table.shape[1]))
  new = (mean + 0.01 * std * noise).astype(table.dtype)
  return {**params, "embed": {**params["embed"], "table": np.concatenate([table, new])}}
