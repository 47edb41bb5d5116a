"""`train.init_from`: a run's first start from a released RecurrentGemma (Griffin / Hawk)
checkpoint, to continue it with the Birdie curriculum.

    python -m birdie_jax.train.init_from --tokenizer=ckpt/tokenizer.model --out=ckpt/birdie.model
    python -m birdie_jax.main --config=configs/recurrentgemma.py:2b --workdir=workdirs/rg2b \\
        --config.train.init_from=ckpt/2b --config.data.tokenizer.model_path=ckpt/birdie.model

The checkpoint directory is what `recurrentgemma.jax.load_parameters` reads: an Orbax checkpoint
of their params (the released ones hold the bare params tree; their `save_parameters` wraps it as
`{"params": ...}`; both load). Nothing else is read from it.

At a first start (no checkpoint in the workdir; a resumed run restores its own and ignores
`train.init_from`), `init_params` reads the checkpoint's shapes, checks the run's model config
against them (one line naming every differing key and its value, before any array is read),
reads the arrays on the host, converts them (`models/recurrentgemma.py`), casts them to float32
(our master params) and places them in the run's shardings; the optimizer starts fresh.

    params = load_init_params(path, run_config.model, vocab_size)   # host pure dict, float32

Tokenizer: the released model must keep its own 256k SentencePiece tokenizer, but our tokenizers
reserve Birdie's special tokens (`data/special_tokens.py`: <begin>, the paradigm tokens, 256
sentinels, ...) as control symbols, which Gemma's lacks. `extend_tokenizer` (the first command
above) appends the missing ones after Gemma's pieces, so every Gemma id keeps its meaning and text
encodes exactly as before; the run's vocabulary is then larger than the checkpoint's, and
`models.recurrentgemma.extend_vocab` adds the new embedding rows.

Bidirectional runs (`model.bidirectional`): the checkpoint loads unchanged (see
`models/recurrentgemma.py`): in each bidirectional layer the second half of the RG-LRU channels,
trained as forward channels, becomes the prefix's reverse direction with all its trained weights.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from birdie_jax import cli
from birdie_jax.console import log_progress
from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import SentencePieceTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models import presets
from birdie_jax.models import recurrentgemma as rgemma
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.workdir import as_path, write_atomic

_KEY = "train.init_from"


def _metadata_tree(path: str) -> Mapping[str, Any] | None:
  """The checkpoint's tree of array metadata (`.shape`, `.dtype`), None if `path` holds no Orbax
  PyTree checkpoint."""
  if not os.path.isdir(path):
    return None
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(path)
  except (OSError, ValueError, KeyError, TypeError, FileNotFoundError):
    return None
  tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
  if tree is None:  # older Orbax: the metadata is the tree itself
    tree = getattr(metadata, "item_metadata", metadata)
  return tree if isinstance(tree, Mapping) else None


def is_recurrentgemma_checkpoint(path: str) -> bool:
  """Whether `path` is an Orbax checkpoint of RecurrentGemma params (what `load_init_params`
  loads); False for anything else (a birdie_jax workdir, a missing path)."""
  tree = _metadata_tree(path)
  return tree is not None and rgemma.is_recurrentgemma_params(tree)


def expected_config(arch: rgemma.Architecture, run: ModelConfig) -> ModelConfig:
  """The model config a run needs for the checkpoint `arch`: its shapes, its release's embedding
  scale, window and soft cap (for a checkpoint of no known release, the run's own, as their
  model would run them: sqrt(width) rounded to bfloat16), and the run's other keys."""
  if arch.release is None:
    arch = dataclasses.replace(
        arch, embeddings_scale_by_sqrt_dim=run.embed_scale != "none",
        attention_window_size=run.attention_window - 1, logits_soft_cap=run.logits_soft_cap)
  return rgemma.model_config(arch, run)


def check_config(path: str, arch: rgemma.Architecture, run: ModelConfig) -> None:
  """ConfigError (one line) naming each model key where the run differs from the checkpoint."""
  expected = expected_config(arch, run)
  diffs = rgemma.mismatches(run, expected)
  if diffs:
    listed = ", ".join(f"model.{k} {a!r} (run) != {b!r} (checkpoint)" for k, a, b in diffs)
    flags = " ".join(f"--config.model.{k}={_flag(getattr(expected, k))}" for k, _, _ in diffs)
    hint = (f"configs/recurrentgemma.py:{arch.release.lower()} sets them"
            if arch.release else f"set {flags}")
    raise ConfigError(f"{_KEY} {path} is {arch.describe()}, unlike the run's model: {listed} "
                      f"({hint})")


def _flag(value: Any) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def load_init_params(path: str, model_config: ModelConfig | Mapping[str, Any],
                     vocab_size: int | None = None, *, seed: int = 0) -> dict[str, Any]:
  """Our model's params (host float32 numpy, a pure dict in `model_config`'s layout) from the
  RecurrentGemma checkpoint directory `path`.

  `model_config` (a ModelConfig or a `model` group) must describe the checkpoint's model
  (ConfigError naming the differences otherwise); `vocab_size` (the run's tokenizer's, default:
  the checkpoint's) may exceed the checkpoint's by rows `extend_vocab` adds with `seed`."""
  run = presets.resolve(model_config)
  tree = _metadata_tree(path)
  if tree is None or not rgemma.is_recurrentgemma_params(tree):
    what = "no such directory" if not os.path.isdir(path) else (
        "not an Orbax checkpoint" if tree is None else
        f"an Orbax checkpoint of other params (keys {sorted(tree)[:4]})")
    raise ConfigError(f"{_KEY} {path} is not a RecurrentGemma checkpoint ({what}): give the "
                      f"directory recurrentgemma.jax.load_parameters reads")
  arch = rgemma.architecture(tree)
  check_config(path, arch, run)
  if vocab_size is not None and vocab_size < arch.vocab_size:
    raise ConfigError(f"{_KEY} {path} has a {arch.vocab_size}-token vocabulary, the run's "
                      f"tokenizer {vocab_size}: use the checkpoint's tokenizer "
                      f"(data.tokenizer.model_path, extended by python -m {__name__})")
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  theirs = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  params = rgemma.from_recurrentgemma(theirs, run)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  if vocab_size is not None:
    params = rgemma.extend_vocab(params, vocab_size, seed=seed)
  return params


def check_init_from(config: ml_collections.ConfigDict, first_start: bool) -> None:
  """At a first start with `train.init_from` set, one ConfigError line unless it is a RecurrentGemma
  checkpoint directory: checked before the data and tokenizer are built, so a mistyped path stops
  at once (a resumed run restores its own checkpoint and never reads it)."""
  path = config.train.init_from
  if path and first_start and not is_recurrentgemma_checkpoint(path):
    raise ConfigError(f"{_KEY} {path} is not a RecurrentGemma checkpoint directory (the Orbax "
                      "params that recurrentgemma.jax.load_parameters reads)")


def init_params(config: ml_collections.ConfigDict, setup, vocab_size: int) -> Any:
  """`train.init_from`'s params placed in `setup.param_shardings` (a `PlacedModel`'s), or None
  when the config names no checkpoint. Every process reads the whole checkpoint."""
  path = config.train.init_from
  if not path:
    return None
  params = load_init_params(path, config.model, vocab_size, seed=config.seed)
  arch = rgemma.architecture(_metadata_tree(path))
  added = vocab_size - arch.vocab_size
  note = f"; {added} embedding rows added for the tokenizer's extra pieces" if added else ""
  reverse = ("; bidirectional layers: their reverse channel halves start from the causal "
             "weights" if config.model.bidirectional else "")
  log_progress(f"{_KEY}: params of {arch.describe()} from {path}{note}{reverse}")
  return jax.tree.map(_place, params, setup.param_shardings)


def _place(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array as a global array (each device takes its shard; any number of processes)."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def extend_tokenizer(source: str, out: str) -> int:
  """Writes `source` (a SentencePiece .model, e.g. RecurrentGemma's) to `out` with every reserved
  token of `special_tokens.ALL` a control symbol: present ones become control symbols (their
  <pad>, <bos>, <eos> already are; <unk> stays unknown), missing ones are appended in
  `special_tokens` order, after every existing piece, so no existing id changes. Returns the
  number of pieces appended; ConfigError if the result is no tokenizer of ours (pad id not 0)."""
  proto = model_pb2.ModelProto()
  try:
    proto.ParseFromString(as_path(source).read_bytes())
  except OSError as e:
    raise ConfigError(f"cannot read tokenizer model {source}: {e.strerror}") from None
  except DecodeError:
    raise ConfigError(f"tokenizer model {source} is not a SentencePiece model") from None
  Piece = model_pb2.ModelProto.SentencePiece
  index = {piece.piece: i for i, piece in enumerate(proto.pieces)}
  added = 0
  for name in special_tokens.ALL:
    if name in index:
      piece = proto.pieces[index[name]]
      if piece.type not in (Piece.CONTROL, Piece.UNKNOWN):
        piece.type = Piece.CONTROL
    else:
      proto.pieces.add(piece=name, score=0.0, type=Piece.CONTROL)
      added += 1
  data = proto.SerializeToString()
  SentencePieceTokenizer(data, origin=f"{source} extended")  # ConfigError if not usable
  write_atomic(as_path(out), data)
  return added


def main(argv: Sequence[str] | None = None) -> None:
  """`--tokenizer=IN --out=OUT`: `extend_tokenizer`, one line on success or error."""
  parser = cli.ArgumentParser(prog=f"python -m {__name__}", description=(
      "Extend a RecurrentGemma (Gemma) SentencePiece tokenizer with Birdie's reserved tokens, "
      "for data.tokenizer.model_path of a run with train.init_from."))
  parser.add_argument("--tokenizer", required=True, help="their tokenizer.model")
  parser.add_argument("--out", required=True, help="where to write the extended .model")
  args = parser.parse_args(argv)
  try:
    added = extend_tokenizer(args.tokenizer, args.out)
  except ConfigError as e:
    cli.fail(parser.prog.removeprefix("python -m "), e)
  size = SentencePieceTokenizer.load(args.out).vocab_size
  print(f"{args.out}: {added} reserved tokens appended ({size} pieces; ids below "
        f"{size - added} unchanged)")


if __name__ == "__main__":
  main(sys.argv[1:])
