"""Sample from a run's latest checkpoint.

    python -m birdie_jax.generate --workdir=workdirs/base --prompt="To be, or not" \
        [--max_new_tokens=64 --temperature=0.8 --top_k=40 --layout=prefix]

Reads the run's `config.json`, its cached tokenizer and the newest checkpoint's params. The prompt
is laid out as in training (`--layout=prefix`: the prompt is the inputs X, then BEGIN, as Birdie's
objectives condition; `--layout=continuation`: BEGIN, then the text to continue, as next-token
prediction trains).
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import jax
import ml_collections
from absl import app, flags, logging

from birdie_jax.config import default_config, validate_config
from birdie_jax.data import special_tokens
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import SentencePieceTokenizer, Tokenizer, build_tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models.decoding import LAYOUTS, generate, prompt_batch
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import axis_rules
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.state import make_train_setup

def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config: `workdir/config.json` over the defaults (so older runs still load)."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except OSError as e:
    raise ConfigError(f"cannot read {path} ({e.strerror}): is --workdir a training run?") from None
  config = default_config()
  config.update(saved)
  validate_config(config)
  return config


def load_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> Tokenizer:
  """The run's tokenizer: the one SentencePiece model cached in the workdir, else rebuilt as the
  trainer built it (which reads the training documents to find the cache key)."""
  tokenizer = config.data.tokenizer
  if tokenizer.kind == "sentencepiece" and not tokenizer.model_path:
    cached = sorted(pathlib.Path(workdir, "tokenizer").glob("spm_*.model"))
    if len(cached) == 1:
      return SentencePieceTokenizer.load(cached[0])
    documents = load_documents(config.data.source, "train", val_fraction=config.data.val_fraction,
                               text_field=config.data.text_field)
    return build_tokenizer(config.data, documents, cache_dir=workdir)
  return build_tokenizer(config.data, [], cache_dir=workdir)


def generate_text(workdir: str, prompt: str, *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_k: int = 0, layout: str = "prefix",
                  seed: int = 0) -> str:
  """Text generated after `prompt` by the latest checkpoint in `workdir`."""
  config = load_config(workdir)
  tokenizer = load_tokenizer(config, workdir)
  mesh = make_mesh(config.mesh.shape)
  setup = make_train_setup(config, tokenizer.vocab_size, mesh)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep, async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise ConfigError(f"no checkpoint in {workdir}/checkpoints")
    params = checkpointer.restore_params(step, setup)
  finally:
    checkpointer.close()
  batch = prompt_batch([tokenizer.encode(prompt)],
                       begin_id=tokenizer.special_id(special_tokens.BEGIN),
                       pad_id=tokenizer.pad_id, layout=layout)
  with jax.set_mesh(mesh), axis_rules(setup.rules):
    tokens = generate(setup.model(params), batch, max_new_tokens=max_new_tokens,
                      rng=jax.random.key(seed), temperature=temperature, top_k=top_k,
                      eos_id=tokenizer.special_id(special_tokens.EOS), pad_id=tokenizer.pad_id)
  return tokenizer.decode(jax.device_get(tokens)[0])


def define_flags() -> None:
  """The CLI's flags (defined only when run as a program: `birdie_jax.main` also has --workdir)."""
  flags.DEFINE_string("workdir", None, "the training run's directory", required=True)
  flags.DEFINE_string("prompt", "", "text to condition on")
  flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate")
  flags.DEFINE_float("temperature", 0.0, "sampling temperature (0: greedy)")
  flags.DEFINE_integer("top_k", 0, "sample among the k most likely tokens (0: all)")
  flags.DEFINE_enum("layout", "prefix", LAYOUTS, "how the prompt is laid out")
  flags.DEFINE_integer("seed", 0, "sampling seed")


def main(argv: list[str]) -> None:
  """Prints the generated text; a user error ends in one line on stderr."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter (Orbax) only on request
  try:
    print(generate_text(f.workdir, f.prompt, max_new_tokens=f.max_new_tokens,
                        temperature=f.temperature, top_k=f.top_k, layout=f.layout, seed=f.seed))
  except ConfigError as e:
    print(f"birdie_jax.generate: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
