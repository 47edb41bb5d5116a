"""The toy tasks' documents, read from toy.json beside this file (lm-eval's `custom_dataset`:
no download, no Hugging Face cache, whatever the working directory)."""
import json
import pathlib

import datasets


def _split(name: str) -> datasets.DatasetDict:
  rows = json.loads((pathlib.Path(__file__).parent / "toy.json").read_text(encoding="utf-8"))
  return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows[name])})


def choice(**_metadata) -> datasets.DatasetDict:
  return _split("choice")


def generate(**_metadata) -> datasets.DatasetDict:
  return _split("generate")


def rolling(**_metadata) -> datasets.DatasetDict:
  return _split("rolling")
