"""The import graph runs downhill: every import of birdie_jax, experiments/ and configs/ (read with
`ast`, so imports inside functions count too) goes from a unit to one in its own layer or below,
and no units import each other, directly or through others.

A unit is a subpackage of birdie_jax (`train`, `evals`, ...), a top-level module of birdie_jax
(`config`, `aot`, ...), `experiments` or `configs`. Layers, lowest first:

  base      errors, console, workdir, cli, chips and the package's own __init__: leaf helpers
            that import at most `errors` (errors and one-line messages, progress lines, workdir
            paths, flag parsing, TPU chip tables), so every layer may use them; `birdie_jax`
            (__init__) runs on every import of the package, so it must import nothing above.
  kernels   ops, objectives, parallel
  parts     models, data, controller
  evals     evals: scores a placed model's params (`models.placed`); never trains
  config    config: the run's config and its validation, which reads the sections and names that
            evals (`eval`), controller, data, models and objectives define, so it sits above them
            all and below training, which validates the config it runs
  train     train: the loop, checkpoints, the mixture controller's loop side, fine-tuning; it may
            run evaluations, never the reverse
  top       bench, lab, experiments, configs and the entry points main, evaluate, generate, aot,
            trained_run, lm_eval (inference tools above training: they read its checkpoints)
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from helpers import ROOT

LAYERS = (
    ("errors", "console", "workdir", "cli", "chips", "birdie_jax"),
    ("ops", "objectives", "parallel"),
    ("models", "data", "controller"),
    ("evals",),
    ("config",),
    ("train",),
    ("bench", "lab", "experiments", "configs", "main", "evaluate", "generate", "aot",
     "trained_run", "lm_eval", "finetune"),
)
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
TREES = ("birdie_jax", "experiments", "configs")  # folders whose files are read


def unit_of_file(path: Path, root: Path = ROOT) -> str:
  """The unit a source file belongs to: `birdie_jax/train/loop.py` -> 'train'."""
  parts = path.relative_to(root).with_suffix("").parts
  if parts[0] != "birdie_jax":
    return parts[0]
  return "birdie_jax" if parts[1:] == ("__init__",) else parts[1]


def unit_of_module(name: str) -> str | None:
  """The unit of a dotted module name, None outside the units (jax, numpy, ...)."""
  parts = name.split(".")
  if parts[0] == "birdie_jax":
    return parts[1] if len(parts) > 1 else "birdie_jax"
  return parts[0] if parts[0] in TREES else None


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
  """(dotted module, line) for every import in `path` (under `root`), at any depth; `from a import
  b` yields both a and a.b (b may be a module), relative imports resolved against the file's
  package."""
  package = path.relative_to(root).with_suffix("").parts[:-1]
  out = []
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      out += [(alias.name, node.lineno) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = package[:len(package) - node.level + 1] if node.level else ()
      module = ".".join(base + tuple(filter(None, [node.module])))
      out.append((module, node.lineno))
      out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
  return out


@functools.cache
def import_edges() -> dict[tuple[str, str], str]:
  """(importing unit, imported unit) -> 'file:line' of one import that makes the edge."""
  edges = {}
  for tree in TREES:
    for path in sorted((ROOT / tree).rglob("*.py")):
      source = unit_of_file(path)
      for module, line in imported_modules(path):
        target = unit_of_module(module)
        if target is not None and target != source:
          edges.setdefault((source, target), f"{path.relative_to(ROOT)}:{line}")
  return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` (node -> successors) as [a, b, ..., a], or None if it has none."""
  state: dict[str, str] = {}  # absent: unseen, 'open': on the current path, 'done'
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = "open"
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    path.pop()
    return None

  for start in sorted(graph):
    if start not in state and (cycle := visit(start)):
      return cycle
  return None


def test_find_cycle_finds_cycles_and_only_cycles():
  """The checker itself: a chain and a diamond have no cycle; a loop through three nodes does."""
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}) is None
  cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
  assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path):
  """An import inside a function and a relative import both count, each at its own unit."""
  package = tmp_path / "birdie_jax" / "evals"
  package.mkdir(parents=True)
  (package / "x.py").write_text("import numpy\nfrom . import task\nfrom ..models import forward\n"
                                "def f():\n  from birdie_jax.train import loop\n")
  found = {unit_of_module(m) for m, _ in imported_modules(package / "x.py", tmp_path)}
  assert found == {None, "evals", "models", "train"}
  assert unit_of_file(package / "x.py", tmp_path) == "evals"


def test_every_unit_has_a_layer():
  """A new package or top-level module must be placed (and so reviewed) in LAYERS."""
  units = {unit_of_file(p) for tree in TREES for p in (ROOT / tree).rglob("*.py")}
  assert units - set(LAYER) == set(), "place new packages and modules in LAYERS"


def test_no_cycle_between_units():
  """No unit imports itself through others (e.g. train -> evals -> train)."""
  graph: dict[str, set[str]] = {}
  for source, target in import_edges():
    graph.setdefault(source, set()).add(target)
  assert find_cycle(graph) is None


def test_imports_run_downhill():
  """E.g. evals imports nothing from train or trained_run; models nothing from data."""
  uphill = [f"{where}: {source} imports {target}"
            for (source, target), where in sorted(import_edges().items())
            if LAYER[target] > LAYER[source]]
  assert uphill == []
