"""Run identity: what defines a run, recorded at its first start and checked at every later one.

    workdir/run.json        {"identity": {key: value}, "tokenizer": {...}, "changes": [...],
                             "starts": [{step, time, devices, device_kind, processes, jax}]}
    workdir/config.json     the config of the latest accepted start
    workdir/config.<n>.json the config.json each later start with another config replaced

`IDENTITY_KEYS` are the config keys that give a checkpoint its meaning: the model's family, shape,
masks and dtype, the data source and its split, the tokenizer, the curriculum, seq_len, batch size
and seed. Any other key (train.steps, learning rates, logging, evaluation and checkpoint cadence,
mesh, compute implementations) is a knob a resumed run may change freely.

    resume = check_resume(config, workdir)     # before anything is built: ConfigError on a change
    tokenizer = resume.tokenizer(config.data, train_docs)   # the pinned one, never retrained
    ...                                                     # model, data, checkpoint restore
    resume.record_start(config, tokenizer, start_step)   # process 0, once all is validated

A later start whose identity differs stops with one line naming each key and both values, unless
`resume.allow` lists the key (a deliberate change: logged, and appended to run.json's changes).
Every start appends where it ran to `starts` (the step it began after, UTC time, device count and
kind, processes, JAX version): a run's throughput is read against the card that gave it.
Workdirs from before run.json are compared with their config.json and pinned at that start.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import jax
import ml_collections

from birdie_jax.config import default_config
from birdie_jax.console import log_warning
from birdie_jax.data.tokenizer import Tokenizer, build_tokenizer
from birdie_jax.data.tokenizer_pin import legacy_tokenizer, load_pinned, pin_tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.workdir import as_path, write_atomic

RUN_FILE = "run.json"
MODEL_KEYS = tuple(f"model.{k}" for k in (
    "family", "preset", "bidirectional", "bidirectional_every", "width", "depth", "lru_width",
    "num_heads", "num_kv_heads", "head_dim", "attention_window", "attention_every", "rope_base",
    "conv_width", "mlp_expansion", "rope_fraction", "embed_scale", "logits_soft_cap"))
IDENTITY_KEYS = ("seed", "curriculum", *MODEL_KEYS, "model.dtype",
                 *(f"data.{k}" for k in ("source", "sources", "source_options", "text_field",
                                         "document_separator", "val_fraction", "gap",
                                         "length_scale", "class_weights", "tokenizer.kind",
                                         "tokenizer.vocab_size", "tokenizer.model_path")),
                 "train.seq_len", "train.batch_size")

Change = tuple[str, Any, Any]  # key, the run's value, the config's value


def _lookup(tree: Any, dotted: str) -> Any:
  for part in dotted.split("."):
    tree = tree[part]
  return tree


def identity(config: Any) -> dict[str, Any]:
  """The IDENTITY_KEYS of a config, or of a config.json's dict (missing keys: the defaults)."""
  defaults = default_config()
  out = {}
  for key in IDENTITY_KEYS:
    try:
      out[key] = _lookup(config, key)
    except (KeyError, TypeError):
      out[key] = _lookup(defaults, key)
  return out


def _recorded(flat: dict[str, Any]) -> dict[str, Any]:
  """run.json's identity with the defaults of keys added since it was written."""
  defaults = default_config()
  return {k: flat[k] if k in flat else _lookup(defaults, k) for k in IDENTITY_KEYS}


def differences(run: dict[str, Any], config: dict[str, Any], keys=IDENTITY_KEYS) -> list[Change]:
  """The keys whose values differ, with the run's value and the config's."""
  return [(k, run.get(k), config[k]) for k in keys if run.get(k) != config[k]]


def describe(changes: list[Change]) -> str:
  """'model.width 32 (run) != 48 (config), seed 0 (run) != 1 (config)'."""
  return ", ".join(f"{k} {old!r} (run) != {new!r} (config)" for k, old, new in changes)


def _read_json(path) -> dict | None:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None


def read_record(workdir: str) -> dict | None:
  """The workdir's run.json, or None for a run not started yet (or from before run.json)."""
  return _read_json(as_path(workdir) / RUN_FILE)


@dataclasses.dataclass
class Resume:
  """The outcome of `check_resume`: the recorded run (None at a first start) and the changes the
  user allowed."""

  workdir: str
  record: dict | None
  legacy: bool  # a workdir with config.json but no run.json: started before run.json existed
  accepted: list[Change]

  def tokenizer(self, data_config, train_documents) -> Tokenizer:
    """The run's pinned tokenizer; at a first start, the one `build_tokenizer` trains or loads."""
    if self.record is not None:
      return load_pinned(self.record["tokenizer"], self.workdir)
    if self.legacy:
      return legacy_tokenizer(data_config, lambda: train_documents, self.workdir)
    return build_tokenizer(data_config, train_documents, cache_dir=self.workdir)

  def record_start(self, config: ml_collections.ConfigDict, tokenizer: Tokenizer,
                   step: int = 0) -> None:
    """Writes run.json (and the pinned tokenizer at a first start) with this start, after `step`,
    appended to its `starts`, then config.json, keeping the one it replaces as config.<n>.json.
    Called on process 0 only, after all validation."""
    base = self.record or {"tokenizer": pin_tokenizer(tokenizer, self.workdir), "changes": []}
    record = dict(base, identity=identity(config), changes=base["changes"] + [
        {"key": k, "run": old, "config": new} for k, old, new in self.accepted],
                  starts=base.get("starts", []) + [this_start(step)])
    write_atomic(as_path(self.workdir) / RUN_FILE, json.dumps(record, indent=2))
    _write_config(config, self.workdir)


def this_start(step: int) -> dict[str, Any]:
  """Where and when this process group starts a run after `step`."""
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  return {"step": int(step), "time": now, "devices": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "processes": jax.process_count(),
          "jax": jax.__version__}


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.json := `config`; a different one before it is kept as config.<n>.json (n = 1, 2..)."""
  path = as_path(workdir) / "config.json"
  text = config.to_json_best_effort(indent=2)
  old = path.read_text(encoding="utf-8") if path.exists() else None
  if old == text:
    return
  if old is not None:
    n = 1
    while (as_path(workdir) / f"config.{n}.json").exists():
      n += 1
    write_atomic(as_path(workdir) / f"config.{n}.json", old)
  write_atomic(path, text)


def allowed_keys(config: ml_collections.ConfigDict) -> set[str]:
  """The keys `resume.allow` names."""
  return {k.strip() for k in config.resume.allow.split(",") if k.strip()}


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> Resume:
  """Compares `config` with the run recorded in `workdir`; ConfigError (one line) naming every
  key that differs and is not in `resume.allow`. The allowed ones are logged."""
  record = read_record(workdir)
  legacy = None if record is not None else _read_json(as_path(workdir) / "config.json")
  if record is not None:
    run = _recorded(record["identity"])
  else:  # a workdir from before run.json: its config.json says what it was started as
    run = None if legacy is None else identity(legacy)
  changes = [] if run is None else differences(run, identity(config))
  allowed = allowed_keys(config)
  refused = [c for c in changes if c[0] not in allowed]
  if refused:
    keys = ",".join(k for k, _, _ in refused)
    raise ConfigError(f"{workdir} holds a run of a different shape or setup: {describe(refused)};"
                      f" resume it with the run's values, or accept with "
                      f"--config.resume.allow={keys}")
  if changes:
    log_warning(f"resume.allow: changing the run in {workdir}: {describe(changes)}")
  return Resume(workdir=workdir, record=record, legacy=legacy is not None, accepted=changes)


def check_model(config: ml_collections.ConfigDict, workdir: str) -> None:
  """ConfigError if `config` (e.g. evaluate's --config) describes another model than the run's."""
  record = read_record(workdir)
  changes = [] if record is None else differences(_recorded(record["identity"]),
                                                  identity(config), MODEL_KEYS)
  if changes:
    raise ConfigError(f"the config describes another model than the run in {workdir}: "
                      f"{describe(changes)}")
