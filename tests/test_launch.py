"""launch/: every launcher's --dry-run prints the exact commands (without gcloud installed), user
errors stop with a usage line, and a failing stage stops a real launch (with a stand-in gcloud)."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
JAX_PIN = re.search(r"^jax==(\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
CONFIG = "configs/sweep.py:hawk-1.4b-birdie"


def launch(tmp_path, script: str, *args: str, path: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
  """Runs launch/<script> from an unrelated folder; by default with nothing on PATH (no gcloud,
  no git, no pip: a dry run needs none of them)."""
  env = dict(os.environ, PATH=path or str(tmp_path / "empty"))
  result = subprocess.run([sys.executable, str(REPO / "launch" / script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def commands(stdout: str) -> dict[str, list[list[str]]]:
  """The printed commands, split into argv lists, grouped under their `# stage` lines."""
  stages: dict[str, list[list[str]]] = {}
  current = None
  for line in stdout.splitlines():
    if line.startswith("# "):
      current = line[2:]
      stages[current] = []
    else:
      stages[current].append(shlex.split(line))
  return stages


def remote(command: list[str]) -> str:
  """The script a `gcloud ... ssh --command=...` runs."""
  (script,) = [a[len("--command="):] for a in command if a.startswith("--command=")]
  return script


def test_pinned_jax_matches_the_environment():
  import jax  # pylint: disable=g-import-not-at-top
  assert JAX_PIN == jax.__version__


def test_tpu_vm_dry_run_prints_every_gcloud_stage(tmp_path):
  out = launch(tmp_path, "tpu_vm.py", "--name=bd-1", "--zone=us-west4-a",
               "--accelerator=v5litepod-256", "--project=proj", "--spot", f"--config={CONFIG}",
               "--workdir=gs://bkt/runs/h", "--dry-run", "--", "--config.train.steps=100").stdout
  stages = commands(out)
  assert list(stages) == ["create", "copy", "install", "run", "logs", "fetch", "delete"]
  zone = ["--zone=us-west4-a", "--project=proj"]
  tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  assert stages["create"] == [tpu_vm + ["create", "bd-1", "--accelerator-type=v5litepod-256",
                                        "--version=v2-alpha-tpuv5-lite"] + zone + ["--spot"]]
  tar, scp = stages["copy"]
  assert tar[:3] == ["tar", "czf", "/tmp/birdie_jax-bd-1.tar.gz"]
  assert tar[-3:] == ["-C", str(REPO), "."] and "--exclude=./.git" in tar
  assert scp == tpu_vm + ["scp", "/tmp/birdie_jax-bd-1.tar.gz", "bd-1:birdie_jax.tar.gz",
                          "--worker=all"] + zone
  (install,) = stages["install"]
  assert install[:7] == tpu_vm + ["ssh", "bd-1", "--worker=all"] and install[-2:] == zone
  assert (".venv/bin/pip install -q -r requirements.txt -r requirements-gcs.txt -e . "
          f"'jax[tpu]=={JAX_PIN}'"
          in remote(install))
  assert "python3.11 -m venv .venv" in remote(install)
  (run,) = stages["run"]
  assert run[:7] == tpu_vm + ["ssh", "bd-1", "--worker=all"]
  job = shlex.split(remote(run).split("bash -c ", 1)[1])[0]  # the detached training command
  assert job.startswith(f"env JAX_PLATFORMS=tpu .venv/bin/python -m birdie_jax.main "
                        f"--config={CONFIG} --workdir=gs://bkt/runs/h --config.train.steps=100 "
                        f"> run.log 2>&1")
  (logs,) = stages["logs"]
  assert "--worker=0" in logs and "tail -n +1" in remote(logs) and "run.exit" in remote(logs)
  mkdir, log_copy, rsync = stages["fetch"]
  assert mkdir == ["mkdir", "-p", "workdirs/tpu-bd-1"]
  assert log_copy == tpu_vm + ["scp", "bd-1:birdie_jax/run.log", "workdirs/tpu-bd-1/run.log",
                               "--worker=0"] + zone
  assert rsync == ["gcloud", "storage", "rsync", "--recursive", "--exclude=^checkpoints/",
                   "gs://bkt/runs/h", "workdirs/tpu-bd-1/workdir"]
  assert stages["delete"] == [tpu_vm + ["delete", "bd-1", "--quiet"] + zone]


def test_tpu_vm_single_host_fetches_a_local_workdir_and_picks_the_runtime(tmp_path):
  out = launch(tmp_path, "tpu_vm.py", "--name=v4", "--zone=us-central2-b", "--accelerator=v4-8",
               "--config=configs/sweep.py:hawk-150m-ntp", "--workdir=workdirs/h",
               "--stages=create,fetch", "--dry-run").stdout
  stages = commands(out)
  assert list(stages) == ["create", "fetch"]
  assert "--version=tpu-ubuntu2204-base" in stages["create"][0]
  assert stages["fetch"][-1][4:8] == ["scp", "--recurse", "v4:birdie_jax/workdirs/h",
                                      "workdirs/tpu-v4/"]


@pytest.mark.parametrize("args, message", [
    (["--accelerator=v5litepod-256", "--workdir=workdirs/x"], "several hosts"),
    (["--accelerator=a100-8", "--workdir=gs://b/x"], "--accelerator must be"),
    (["--accelerator=v6e-8", "--workdir=w", "--stages=create,boot"], "unknown --stages"),
])
def test_tpu_vm_user_errors_stop_before_any_command(tmp_path, args, message):
  result = launch(tmp_path, "tpu_vm.py", "--name=n", "--zone=z", f"--config={CONFIG}",
                  "--dry-run", *args, check=False)
  assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_tpu_vm_failed_stage_stops_and_says_how_to_delete(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls.txt"
  gcloud = bin_dir / "gcloud"  # records its arguments; every `ssh` fails
  gcloud.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *" ssh "*) exit 7;; esac\n')
  gcloud.chmod(0o755)
  result = launch(tmp_path, "tpu_vm.py", "--name=bd-2", "--zone=z", "--accelerator=v6e-8",
                  f"--config={CONFIG}", "--workdir=w", "--stages=create,install,run,delete",
                  path=f"{bin_dir}:{os.environ['PATH']}", check=False)
  assert result.returncode == 7
  made = calls.read_text().splitlines()
  assert [line.split()[3] for line in made] == ["create", "ssh"]  # nothing after the failure
  assert "bd-2 is still up" in result.stdout
  assert "gcloud compute tpus tpu-vm delete bd-2 --quiet --zone=z" in result.stdout


def test_gpu_host_dry_run_single_and_multi_host(tmp_path):
  out = launch(tmp_path, "gpu_host.py", "--config=configs/sweep.py:hawk-150m-birdie",
               "--workdir=workdirs/g", "--install", "--dry-run", "--",
               "--config.train.steps=10").stdout
  stages = commands(out)
  assert list(stages) == [f"in {REPO}", "install", "check", "train"]
  assert stages["install"] == [
      ["python3", "-m", "venv", ".venv"],
      [".venv/bin/pip", "install", "-q", "-r", "requirements.txt", "-e", ".",
       f"jax[cuda12]=={JAX_PIN}"]]
  assert stages["check"] == [["nvidia-smi", "-L"]]
  assert stages["train"] == [["env", "JAX_PLATFORMS=cuda", ".venv/bin/python", "-m",
                              "birdie_jax.main", "--config=configs/sweep.py:hawk-150m-birdie",
                              "--workdir=workdirs/g", "--config.train.steps=10"]]
  out = launch(tmp_path, "gpu_host.py", f"--config={CONFIG}", "--workdir=/nfs/h", "--cuda=13",
               "--coordinator=10.0.0.1:1234", "--num-processes=4", "--process-id=3",
               "--dry-run").stdout
  (train,) = commands(out)["train"]
  assert train[:6] == ["env", "JAX_PLATFORMS=cuda", "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234",
                       "JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=3", ".venv/bin/python"]
  out = launch(tmp_path, "gpu_host.py", f"--config={CONFIG}", "--workdir=gs://b/h", "--install",
               "--dry-run").stdout  # a gs:// workdir brings the packages that write there
  assert commands(out)["install"][1][:7] == [".venv/bin/pip", "install", "-q", "-r",
                                             "requirements.txt", "-r", "requirements-gcs.txt"]
  result = launch(tmp_path, "gpu_host.py", f"--config={CONFIG}", "--workdir=w",
                  "--num-processes=2", "--dry-run", check=False)
  assert result.returncode == 2 and "--coordinator" in result.stderr


@pytest.mark.parametrize("runtime, extra, platform", [
    ("tpu", [f"jax[tpu]=={JAX_PIN}"], "tpu"), ("gpu", [f"jax[cuda12]=={JAX_PIN}"], "cuda"),
    ("cpu", [], "cpu")])
def test_colab_dry_run_installs_for_the_runtime(tmp_path, runtime, extra, platform):
  out = launch(tmp_path, "colab.py", f"--runtime={runtime}",
               "--config=configs/sweep.py:hawk-tiny-birdie", "--workdir=/content/r",
               "--dry-run").stdout
  stages = commands(out)
  assert list(stages) == [f"runtime: {runtime}, in {REPO}", "install", "train"]
  assert stages["install"] == [[sys.executable, "-m", "pip", "install", "-q", "-r",
                                "requirements.txt", "-e", ".", *extra]]
  assert stages["train"] == [["env", f"JAX_PLATFORMS={platform}", sys.executable, "-m",
                              "birdie_jax.main", "--config=configs/sweep.py:hawk-tiny-birdie",
                              "--workdir=/content/r"]]


def test_colab_without_a_config_only_installs_and_detects_this_machine(tmp_path):
  stages = commands(launch(tmp_path, "colab.py", "--dry-run").stdout)
  assert list(stages)[1:] == ["install"] and list(stages)[0].startswith("runtime: ")
  result = launch(tmp_path, "colab.py", "--config=c", "--dry-run", check=False)
  assert result.returncode == 2 and "come together" in result.stderr
