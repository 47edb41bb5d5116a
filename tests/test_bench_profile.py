"""`bench profile` at tiny sizes on CPU: every category printed, the rows add up to the traced
step, attention time only in a model with attention and scan time only in one with a recurrence;
the time-sharing arithmetic against hand-computed intervals."""
import contextlib
import io
import json

import pytest

from birdie_jax.bench import profile

_MODELS = ("hawk-tiny", "transformer-tiny")


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
  """Per model: the JSON row the command appended and what it printed."""
  tmp = tmp_path_factory.mktemp("profile")
  out = {}
  for model in _MODELS:
    results, printed = tmp / f"{model}.jsonl", io.StringIO()
    with contextlib.redirect_stdout(printed):
      profile.main([f"--model={model}", "--batch=2", "--seq_len=32", "--vocab=200", "--steps=2",
                    f"--trace_dir={tmp / model}", f"--results={results}"])
    (line,) = results.read_text().splitlines()
    out[model] = (json.loads(line), printed.getvalue())
  return out


def test_every_category_is_printed_and_the_trace_is_kept(profiles, tmp_path_factory):
  for model, (row, printed) in profiles.items():
    table = [line.split() for line in printed.splitlines()]
    labels = {cells[0] for cells in table if cells}
    for category in profile.CATEGORIES:
      assert profile._LABELS.get(category, category) in labels, (model, category)
    assert "step" in labels
    assert list((tmp_path_factory.getbasetemp()).glob(
        f"profile*/{model}/plugins/profile/*/perfetto_trace.json.gz"))


def test_categories_add_up_to_the_step(profiles):
  for model, (row, _) in profiles.items():
    ms, kernel = row["ms"], row["kernel_ms"]
    assert set(ms) == set(profile.CATEGORIES)
    assert all(v >= 0 for v in ms.values()), (model, ms)
    assert row["step_ms"] > 0
    assert sum(ms.values()) == pytest.approx(row["step_ms"], rel=1e-6)
    # A shared instant is never more than the op's own time, and the busy part of the step is
    # covered by the ops' summed durations.
    for category, value in kernel.items():
      assert ms[category] <= value + 1e-9, (model, category)
    assert row["step_ms"] - ms["idle"] <= sum(kernel.values()) + 1e-9
    assert ms["other"] <= 0.05 * row["step_ms"], (model, row["top_other"])
    for category in ("matmuls", "elementwise", "cross_entropy", "optimizer"):
      assert ms[category] > 0, (model, category)
    assert ms["collectives"] == 0  # one device


def test_attention_only_with_attention_and_scan_only_with_a_recurrence(profiles):
  hawk, transformer = profiles["hawk-tiny"][0]["ms"], profiles["transformer-tiny"][0]["ms"]
  assert hawk["scan"] > 0 and hawk["attention"] == 0
  assert transformer["attention"] > 0 and transformer["scan"] == 0


def test_time_is_shared_among_overlapping_ops():
  ops = [profile.OpEvent(1, 5, "a", "matmuls"), profile.OpEvent(3, 8, "b", "scan"),
         profile.OpEvent(9, 12, "c", "matmuls"),  # runs past the window: 1 counts
         profile.OpEvent(14, 15, "d", "scan")]  # outside every window
  got = profile.attribute([(0, 10)], ops)
  # matmuls alone on [1, 3) and [9, 10), shares [3, 5) with scan; scan alone on [5, 8).
  assert got["shared"] == pytest.approx({"matmuls": 2 + 1 + 1, "scan": 1 + 3, "idle": 2})
  assert got["kernel"] == pytest.approx({"matmuls": 4 + 1, "scan": 5})
  assert got["wall"] == 10
  two = profile.attribute([(0, 10), (13, 16)], ops)
  assert two["shared"]["scan"] == pytest.approx(5) and two["shared"]["idle"] == pytest.approx(4)


def test_a_bad_model_ends_in_one_line(capsys):
  assert profile.model_spec("gated_ssm-150m") == "gated_ssm:150m"
  assert profile.model_spec("hawk:rg") == "hawk:rg"
  with pytest.raises(SystemExit):
    profile.main(["--model=hawk-2b"])
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'hawk:2b' is not family:preset" in err
