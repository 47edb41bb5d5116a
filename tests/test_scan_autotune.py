"""The per-card scan tiling (ops/scan_autotune.py): the autotune picks the fastest candidate whose
outputs and gradients match the reference, runs even while a scan is being traced, caches its
choice atomically per card, and the lookup order (environment, cache, known table, autotune) holds;
bad specs and a corrupt cache are one clear error. Kernels run in Pallas interpret mode on CPU."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birdie_jax.errors import ConfigError
from birdie_jax.ops import scan_autotune, scan_pallas
from birdie_jax.ops.scan_pallas import Tiling


@pytest.fixture(autouse=True)
def _small_autotune(tmp_path, monkeypatch):
  """A tiny timed shape, two candidates per stage, a private cache, no answers remembered."""
  monkeypatch.setenv("BIRDIE_JAX_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.delenv(scan_autotune.TILING_ENV, raising=False)
  monkeypatch.delenv(scan_autotune.AUTOTUNE_ENV, raising=False)
  monkeypatch.setattr(scan_autotune, "SHAPE", (2, 24, 16))
  monkeypatch.setattr(scan_autotune, "FORWARDS", ("8x4x1", "16x8x1"))
  monkeypatch.setattr(scan_autotune, "BACKWARDS", ("8x4x1", "16x2x1"))
  scan_autotune.forget()
  yield
  scan_autotune.forget()


def _timer(ms_by_spec):
  """A timer that reports fixed milliseconds per tiling and records what it timed."""
  timed = []

  def timer(tiling, fn, args):
    jax.block_until_ready(fn(*args))
    timed.append(tiling.spec())
    return ms_by_spec[tiling.for_backward().spec()]  # a forward's, or the backward's, time
  timer.timed = timed
  return timer


def test_fastest_correct_candidate_is_chosen_and_cached(tmp_path):
  timer = _timer({"8x4x1": 3.0, "16x8x1": 1.0, "16x2x1": 0.5})
  tiling = scan_autotune.gpu_tiling("Card A", timer=timer)
  # The forward stage picks 16x8x1; the backward stage times both backwards behind it.
  assert tiling == Tiling.parse("16x8x1/16x2x1")
  assert timer.timed == ["8x4x1", "16x8x1", "16x8x1/8x4x1", "16x8x1/16x2x1"]
  entry = json.loads((tmp_path / "cache" / scan_autotune.CACHE_FILE).read_text())["Card A"]
  assert entry["tiling"] == "16x8x1/16x2x1" and entry["shape"] == [2, 24, 16]
  assert entry["ms"]["forward"] == {"8x4x1": 3.0, "16x8x1": 1.0}
  assert entry["ms"]["backward"] == {"16x8x1/8x4x1": 3.0, "16x8x1/16x2x1": 0.5}
  # A new process (answers forgotten) reads the cache and times nothing; another card is tuned
  # and both entries are kept.
  scan_autotune.forget()
  never = _timer({})
  assert scan_autotune.gpu_tiling("Card A", timer=never) == tiling and never.timed == []
  scan_autotune.gpu_tiling("Card B", timer=_timer({"8x4x1": 1.0, "16x8x1": 2.0, "16x2x1": 9.0}))
  assert scan_autotune.table()["Card B"] == "8x4x1"  # the same tiling both ways
  assert scan_autotune.table()["Card A"] == "16x8x1/16x2x1"
  assert not [p for p in (tmp_path / "cache").iterdir() if p.name != scan_autotune.CACHE_FILE]


def test_a_wrong_or_failing_candidate_is_never_chosen(monkeypatch):
  real = scan_pallas.pallas_scan

  def faulty(a, x, h0=None, *, tiling=None, **kw):
    if tiling.spec().startswith("16x8x1"):
      return real(a, x, h0, tiling=tiling, **kw)[0] * 1.1, None  # wrong values
    if tiling.spec() == "8x4x1/16x2x1":
      raise ValueError("the compiler rejects this tiling")
    return real(a, x, h0, tiling=tiling, **kw)
  monkeypatch.setattr(scan_pallas, "pallas_scan", faulty)
  # The wrong forward is reported fastest and the failing backward too: neither is chosen.
  tiling, ms = scan_autotune.autotune(timer=_timer({"8x4x1": 5.0, "16x8x1": 0.1, "16x2x1": 0.1}))
  assert tiling == Tiling.parse("8x4x1")
  assert ms == {"forward": {"8x4x1": 5.0, "16x8x1": None},
                "backward": {"8x4x1": 5.0, "8x4x1/16x2x1": None}}


def test_autotune_runs_while_a_scan_is_traced_and_the_tiling_computes_the_scan():
  """The first scan on a card is traced inside jit: the autotune must still run its kernels."""
  chosen = {}

  @jax.jit
  def traced(a, x):
    chosen["tiling"] = scan_autotune.gpu_tiling("Card C")  # the real timer, interpret mode
    return scan_pallas.pallas_scan(a, x, tiling=chosen["tiling"])[0]

  key_a, key_x = jax.random.split(jax.random.key(3))
  a = jax.random.uniform(key_a, (2, 40, 24), jnp.float32, 0.5, 1.0)
  x = jax.random.normal(key_x, (2, 40, 24), jnp.float32)
  y = np.asarray(traced(a, x), np.float64)
  want = np.zeros_like(y)
  h = np.zeros((2, 24))
  for t in range(40):  # float64 reference recurrence
    h = np.asarray(a[:, t], np.float64) * h + np.asarray(x[:, t], np.float64)
    want[:, t] = h
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  assert chosen["tiling"].spec() in scan_autotune.table()["Card C"]


def test_lookup_order_environment_cache_known_then_autotune(monkeypatch, tmp_path):
  never = _timer({})
  # The known table answers for its cards without timing anything.
  kind = next(iter(scan_autotune.KNOWN))
  assert scan_autotune.gpu_tiling(kind, timer=never) == Tiling.parse(scan_autotune.KNOWN[kind])
  # Autotune off: the built-in GPU tiling for an unknown card.
  monkeypatch.setenv(scan_autotune.AUTOTUNE_ENV, "0")
  assert scan_autotune.gpu_tiling("Card D", timer=never) == scan_pallas.GPU_TILING
  # The environment's spec wins over everything, the cache over the known table.
  monkeypatch.setenv(scan_autotune.TILING_ENV, "32x8x2bp")
  assert scan_autotune.gpu_tiling(kind, timer=never) == Tiling.parse("32x8x2bp")
  monkeypatch.delenv(scan_autotune.TILING_ENV)
  scan_autotune.forget()
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / scan_autotune.CACHE_FILE).write_text(json.dumps({kind: {"tiling": "16x4x2"}}))
  assert scan_autotune.gpu_tiling(kind, timer=never) == Tiling.parse("16x4x2")
  assert never.timed == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "scan_tilings.json is unreadable"),
    ('{"Card E": {"tiling": "64xx"}}', "scan_tilings.json ['Card E']"),
    ('{"Card E": {"tiling": "64x8x4x256"}}', "GPU tilings take no xLEN")])
def test_a_corrupt_cache_is_one_clear_error(tmp_path, content, message):
  (tmp_path / "cache").mkdir()
  (tmp_path / "cache" / scan_autotune.CACHE_FILE).write_text(content)
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
    scan_autotune.gpu_tiling("Card E", timer=_timer({}))
  assert "\n" not in str(e.value)


def test_a_bad_environment_spec_is_one_clear_error(monkeypatch):
  monkeypatch.setenv(scan_autotune.TILING_ENV, "wide")
  with pytest.raises(ConfigError, match=r"\$BIRDIE_JAX_SCAN_TILING"):
    scan_autotune.gpu_tiling("Card F")


def test_cpu_scans_keep_the_platform_default():
  assert jax.default_backend() == "cpu" and scan_autotune.tiling_for_backend() is None


def test_an_unwritable_cache_still_gives_the_choice(tmp_path, monkeypatch, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("BIRDIE_JAX_CACHE_DIR", str(blocker))
  tiling = scan_autotune.gpu_tiling("Card G", timer=_timer({"8x4x1": 1.0, "16x8x1": 2.0,
                                                            "16x2x1": 0.5}))
  assert tiling == Tiling.parse("8x4x1/16x2x1")
  assert "could not cache the tiling" in capsys.readouterr().out
