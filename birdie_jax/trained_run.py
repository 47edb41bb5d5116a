"""A training run's workdir, loaded for inference: its config, tokenizer and latest params.

Shared by the command-line tools that read a run (`generate`, `evaluate`) and by `experiments/`.
The tokenizer is always the run's own: the file pinned at its first start (`run.json`), whatever
the config or the data source say now; nothing here trains one. Workdirs from before pinning
(no run.json) still load, with a warning, from their cached model (`tokenizer_pin.legacy_tokenizer`)
and fail in one line where only a new training could give a tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from birdie_jax.config import default_config, validate_config
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.data.tokenizer_pin import legacy_tokenizer, load_pinned
from birdie_jax.errors import ConfigError
from birdie_jax.models import layer_stack
from birdie_jax.models.placed import PlacedModel, place_model
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.identity import check_model, read_record
from birdie_jax.workdir import as_path


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config: `workdir/config.json` over the defaults (so older runs still load)."""
  path = os.path.join(workdir, "config.json")
  try:
    saved = json.loads(as_path(path).read_text(encoding="utf-8"))
  except OSError as e:
    raise ConfigError(f"cannot read {path} ({e.strerror}): is --workdir a training run?") from None
  config = default_config()
  config.update(saved)
  validate_config(config)
  return config


def load_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> Tokenizer:
  """The run's pinned tokenizer; for a workdir from before pinning, its cached model (found by
  the config's documents where it holds several). Never trains one."""
  record = read_record(workdir)
  if record is not None:
    return load_pinned(record["tokenizer"], workdir)
  data = config.data
  return legacy_tokenizer(data, lambda: load_documents(
      data.source, "train", val_fraction=data.val_fraction, text_field=data.text_field,
      document_separator=data.document_separator), workdir)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What inference needs from a run: the latest checkpoint's params and how to use them."""

  config: ml_collections.ConfigDict
  tokenizer: Tokenizer
  setup: PlacedModel  # model structure and the mesh the params live on
  params: Any
  step: int  # the checkpoint's training step


def _placed(config: ml_collections.ConfigDict, vocab_size: int, mesh) -> PlacedModel:
  """The run's model placed on `mesh` as training placed it (no optimizer: inference only)."""
  return place_model(config.model, vocab_size, mesh, config.mesh.axis_rules, seed=config.seed)


def load_run(workdir: str, config: ml_collections.ConfigDict | None = None, *,
             unstack_layers: bool = False) -> TrainedRun:
  """The latest checkpoint of `workdir` with the run's config (or `config`, which must describe
  the same model); ConfigError if there is no checkpoint or it has another model's shape.

  With `unstack_layers`, a run trained with `model.scan_layers` comes back as the same model
  without it (its config says so, and its params are laid out block by block,
  `layer_stack.unstack_layers`): each decoded token of an attention model at a long prompt costs
  less (no copy of each layer's KV cache), but every block is compiled on its own.
  """
  if config is None:
    config = load_config(workdir)
  else:
    validate_config(config)
    check_model(config, workdir)  # e.g. a causal config on a bidirectional run
  tokenizer = load_tokenizer(config, workdir)
  setup = _placed(config, tokenizer.vocab_size, make_mesh(config.mesh.shape))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep, async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise ConfigError(f"no checkpoint in {workdir}/checkpoints")
    params = checkpointer.restore_params(step, setup)
  finally:
    checkpointer.close()
  if unstack_layers and config.model.scan_layers:
    config = config.copy_and_resolve_references()
    config.model.scan_layers = False
    setup = _placed(config, tokenizer.vocab_size, setup.mesh)
    params = jax.device_put(layer_stack.unstack_layers(params), setup.param_shardings)
  return TrainedRun(config=config, tokenizer=tokenizer, setup=setup, params=params, step=step)
