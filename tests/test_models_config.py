"""`ModelConfig`: frozen and hashable, built from every key of the config's `model` group (none
dropped or added on the way), with the preset's shapes filled in; no model module reads
ml_collections."""
from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

import birdie_jax.models
from birdie_jax.config import default_config
from birdie_jax.errors import ConfigError
from birdie_jax.models.model_config import ModelConfig
from birdie_jax.models.presets import PRESETS, resolve, validate_model_config


def _changed(value):
  """A value of `value`'s type that differs from it."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value * 2 + 1
  return value + "-changed"


def test_model_config_is_frozen_and_hashable():
  config = resolve(default_config().model)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.width = 1  # type: ignore[misc]
  again = resolve(default_config().model)
  assert again is not config and again == config and hash(again) == hash(config)
  wider = dataclasses.replace(config, width=config.width + 1)
  assert len({config: 0, again: 1, wider: 2}) == 2


def test_every_key_of_the_model_group_round_trips():
  group = default_config().model
  assert set(group.keys()) == {field.name for field in dataclasses.fields(ModelConfig)}
  config = resolve(group)
  assert dataclasses.asdict(config) == group.to_dict()
  assert resolve(config) is config  # a ModelConfig is resolved already
  for key in sorted(set(group.keys()) - {"preset"}):  # a preset must name a preset (below)
    changed = {**group.to_dict(), key: _changed(group[key])}  # any mapping, not only a ConfigDict
    fields = dataclasses.asdict(resolve(changed))
    assert fields == changed, key  # this key's field and no other moved


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_a_preset_replaces_only_its_shape_keys(family):
  group = default_config().model
  group.update(family=family, preset="tiny", bidirectional=True, dtype="bfloat16", depth=99)
  config = dataclasses.asdict(resolve(group))
  shape = PRESETS[family]["tiny"]
  assert {key: config[key] for key in shape} == shape
  assert {key: value for key, value in config.items() if key not in shape} == {
      key: value for key, value in group.items() if key not in shape}


def test_a_key_more_or_less_than_the_fields_is_refused():
  group = default_config().model.to_dict()
  with pytest.raises(ConfigError, match="unknown \\['new_key'\\]"):
    resolve({**group, "new_key": 1})
  del group["conv_width"]
  with pytest.raises(ConfigError, match="missing \\['conv_width'\\]"):
    resolve(group)


def test_validation_reads_a_model_config():
  config = dataclasses.replace(resolve(default_config().model), family="transformer", head_dim=15)
  with pytest.raises(ConfigError, match="head_dim"):
    validate_model_config(config)


def test_no_model_module_imports_ml_collections():
  folder = pathlib.Path(birdie_jax.models.__file__).parent
  modules = sorted(folder.glob("*.py"))
  assert len(modules) > 10
  for path in modules:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
      else:
        continue
      assert not any(n.split(".")[0] == "ml_collections" for n in names), path.name
