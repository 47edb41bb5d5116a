"""Test set-up: 8 emulated CPU devices and a persistent compilation cache, before JAX loads; the
data index cache in pytest's temporary folder rather than ~/.cache."""
import os
import pathlib

import pytest

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


@pytest.fixture(autouse=True, scope="session")
def _birdie_jax_cache_dir(tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("BIRDIE_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("birdie_jax_cache")))
    yield
