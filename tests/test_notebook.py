"""The Colab demo notebook runs end to end on CPU (train, plots, generation, phonebook evaluation,
instruction tuning, an lm-eval-harness call):
its code cells, in order, in a fresh Python (IPython `!`/`%` lines dropped), started in the
notebook's folder as Jupyter would."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "experiments" / "notebooks" / "birdie_demo.ipynb"


def _notebook() -> dict:
  with open(NOTEBOOK, encoding="utf-8") as f:
    return json.load(f)


def notebook_script(notebook: dict) -> str:
  """The code cells joined in order, without IPython magic or shell lines."""
  cells = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
  lines = [line for cell in cells for line in cell.splitlines()
           if not line.lstrip().startswith(("!", "%"))]
  return "\n".join(lines) + "\n"


def test_notebook_is_saved_without_outputs():
  notebook = _notebook()
  assert notebook["nbformat"] == 4
  code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
  assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_notebook_trains_plots_generates_and_evaluates(tmp_path):
  """BIRDIE_NOTEBOOK_FAST=1: 10 training steps, 2 phonebook examples per difficulty."""
  script = tmp_path / "notebook.py"
  script.write_text(notebook_script(_notebook()), encoding="utf-8")
  workdir = tmp_path / "run"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user
  # Unoptimised compiles, as the suite's other subprocesses (helpers.subprocess_env): the cells'
  # results are the same, and compiling dominates a 10-step run (133 s with them on, 2 cores).
  env.update(BIRDIE_NOTEBOOK_FAST="1", BIRDIE_NOTEBOOK_WORKDIR=str(workdir), MPLBACKEND="Agg",
             JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  result = subprocess.run([sys.executable, str(script)], cwd=NOTEBOOK.parent, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  out = result.stdout
  assert f"repository: {REPO}" in out
  assert "hawk tiny | curriculum birdie | 10 steps" in out
  assert (workdir / "mixture.png").stat().st_size > 10_000
  steps = [json.loads(line)["step"] for line in
           (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
  assert max(steps) == 10
  generated = [line for line in out.splitlines() if line.startswith("Generated: ")]
  assert len(generated) == 1 and len(generated[0]) > len("Generated: ''")
  report = json.loads((workdir / "eval" / "10.json").read_text(encoding="utf-8"))
  assert list(report["tasks"]) == ["phonebook"] and report["seq_len"] == 512
  assert "| phonebook | digit_accuracy |" in out
  # Instruction tuning: 8 steps on the tiny set, validated at 4 and 8, from the run's params.
  sft_rows = [json.loads(line) for line in
              (tmp_path / "run-sft" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
  assert [r["step"] for r in sft_rows if "val_loss" in r] == [4, 8]
  assert any(line.startswith("'Repeat this sentence: To be, or not to be' -> ")
             for line in out.splitlines())
  # lm-eval-harness: lm-eval's table (a task's first metric on its row, the others below it)
  # holds the three toy tasks and their metrics.
  cells = {cell.strip() for line in out.splitlines() if line.startswith("|")
           for cell in line.split("|")}
  for name in ("toy_choice", "toy_generate", "toy_rolling", "acc", "exact_match",
               "word_perplexity"):
    assert name in cells, name
