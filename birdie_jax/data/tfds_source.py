"""Documents from a prepared TFDS dataset in array_record format (read lazily, no TensorFlow).

Spec: `tfds:<name>[/<config>][:<version>]`, looked up under `data_dir`, else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets`. The dataset must already be prepared there: nothing downloads at run time.
"""
from __future__ import annotations

from collections.abc import Sequence
import os
import pathlib
import re
from typing import Any

from birdie_jax.errors import ConfigError

_SPEC = re.compile(
    r"tfds:(?P<name>[\w-]+)(?:/(?P<config>[\w.-]+))?(?::(?P<version>\d+\.\d+\.\d+))?")
_VERSION = re.compile(r"\d+\.\d+\.\d+")


class TfdsTexts(Sequence[str]):
  """One text feature of a TFDS data source, decoded to str on access (invalid UTF-8 replaced)."""

  def __init__(self, data_source: Any, text_field: str):
    self._data_source = data_source
    self._text_field = text_field

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, i: int) -> str:
    text = self._data_source[i][self._text_field]
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def _version_key(version: str) -> tuple[int, ...]:
  return tuple(int(part) for part in version.split("."))


def builder_dir(spec: str, data_dir: str | None = None) -> pathlib.Path:
  """The prepared dataset directory that `spec` names (the newest version if none is given)."""
  match = _SPEC.fullmatch(spec)
  if not match:
    raise ConfigError(f"bad source spec {spec!r}: expected tfds:<name>[/<config>][:<version>]")
  root = pathlib.Path(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
  path = root.expanduser() / match["name"]
  if match["config"]:
    path /= match["config"]
  version = match["version"]
  if version is None:
    found = [p.name for p in path.glob("*") if _VERSION.fullmatch(p.name)] if path.is_dir() else []
    version = max(found, key=_version_key, default="")
  path /= version
  if not (path / "dataset_info.json").is_file():
    raise ConfigError(f"TFDS dataset {spec} is not prepared under {root} (nothing is downloaded)")
  return path


def open_builder(spec: str, data_dir: str | None = None) -> Any:
  """The TFDS builder of a prepared dataset, read from its directory (no builder class needed)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (optional dependency)
  except ImportError:
    raise ConfigError(f"source {spec} needs tensorflow-datasets: pip install "
                      "'birdie_jax[tfds]'") from None
  return tfds.builder_from_directory(str(builder_dir(spec, data_dir)))


def split_texts(builder: Any, split: str, text_field: str) -> TfdsTexts:
  """The texts of one split of an array_record TFDS dataset."""
  name = builder.info.full_name
  if split not in builder.info.splits:
    raise ConfigError(f"TFDS dataset {name} has no split {split!r} "
                      f"(it has {', '.join(builder.info.splits)})")
  if text_field not in builder.info.features:
    raise ConfigError(f"TFDS dataset {name} has no feature {text_field!r} "
                      f"(it has {', '.join(builder.info.features)})")
  try:
    data_source = builder.as_data_source(split=split)
  except NotImplementedError:
    raise ConfigError(f"TFDS dataset {name} is not in array_record format") from None
  return TfdsTexts(data_source, text_field)
