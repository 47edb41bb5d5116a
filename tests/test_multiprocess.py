"""Two processes x 4 CPU devices train like one process x 8 devices on the same global batches.

The workers are the real CLI (`python -m birdie_jax.main --num_processes=2 --process_id=i
--coordinator_address=localhost:PORT`), running Birdie's controller on a bidirectional tiny Hawk;
SIGTERM to process 1 alone stops both at one agreed step with one checkpoint. This process (8
devices) then replays the run: the same per-process data shards concatenated into the global
batch, the mixture weights the workers logged, the same train step; and restores the workers'
checkpoint.
"""
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from birdie_jax.controller.controller import Controller
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.pack_dataset import planner_states
from birdie_jax.data.pipeline import make_train_dataset, make_validation_batches
from birdie_jax.data.pipeline import set_mixture_weights
from birdie_jax.data.sources import load_documents
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models.forward import make_eval_step, mean_eval_loss
from birdie_jax.objectives.mixture import state_weights
from birdie_jax.parallel import distributed
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.train.checkpointing import Checkpointer
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step
from helpers import ROOT, subprocess_env, tiny_config
from models_helpers import fast_compile  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compile")

PROCESSES = 2
CONTROL_STEP = 3  # schedule_scale 0.01: controller evaluations at steps 1, 2, 3 (control), 5, ...
OVERRIDES = {"curriculum": "birdie", "model.bidirectional": True, "train.steps": 1000,
             "train.log_every": 1, "train.eval_every": 2, "checkpoint.every_steps": 100_000,
             "controller.schedule_scale": 0.01, "controller.num_candidates": 64,
             "controller.train_steps": 8, "controller.hidden": 16, "controller.layers": 1,
             "controller.history": 1}


def _config():
  config = tiny_config()
  for dotted, value in OVERRIDES.items():
    group, key = dotted.rsplit(".", 1) if "." in dotted else (None, dotted)
    (config[group] if group else config)[key] = value
  return config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _rows(workdir) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Gloo prints "[Gloo] Rank R is connected to N peer ranks. Expected number of connected peer ranks
# is : N" once per device, from concurrent threads, so its pieces can interleave across lines.
_GLOO_PIECES = ("[Gloo] Rank ", " is connected to ",
                " peer ranks. Expected number of connected peer ranks is : ")


def _without_gloo_notes(text: str) -> str:
  """`text` less Gloo's connection notes, also when several threads' notes interleave."""
  for piece in _GLOO_PIECES:
    text = text.replace(piece, "")
  return "".join(line for line in text.splitlines(keepends=True)
                 if not re.fullmatch(r"[\d\s]*", line))


def _run_workers(workdir, tmp_path) -> tuple[int, list[str]]:
  """Starts the workers, SIGTERMs process 1 once a step has trained on the controller's mixture;
  returns the step they stopped at and each worker's stdout (less Gloo's connection notes)."""
  port = _free_port()
  # The compilation cache is passed on, but multi-process CPU runs turn it off
  # (parallel/distributed.py): they hung on it.
  env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
  overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  workers, texts = [], []
  with contextlib.ExitStack() as stack:
    logs = [(stack.enter_context(open(tmp_path / f"worker{i}.out", "w+", encoding="utf-8")),
             stack.enter_context(open(tmp_path / f"worker{i}.err", "w+", encoding="utf-8")))
            for i in range(PROCESSES)]
    try:
      for index, (out, err) in enumerate(logs):
        command = [sys.executable, "-m", "birdie_jax.main", "--config=configs/base.py:tiny",
                   f"--workdir={workdir}", *overrides, f"--num_processes={PROCESSES}",
                   f"--process_id={index}", f"--coordinator_address=localhost:{port}"]
        workers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err))
      deadline = time.monotonic() + 300
      # A loss row after the controlled step: every process has passed that step's sync point.
      while not any(r["step"] == CONTROL_STEP + 1 and "loss" in r for r in _rows(workdir)):
        for worker, (_, err) in zip(workers, logs):
          err.seek(0)
          assert worker.poll() is None, err.read()[-3000:]
        assert time.monotonic() < deadline, "the workers did not train on the controlled mixture"
        time.sleep(0.2)
      workers[1].send_signal(signal.SIGTERM)
      for worker in workers:
        worker.wait(timeout=120)
    finally:
      for worker in workers:
        if worker.poll() is None:
          worker.kill()
    for worker, (out, err) in zip(workers, logs):
      out.seek(0)
      err.seek(0)
      assert worker.returncode == 0, err.read()[-3000:]
      texts.append(_without_gloo_notes(out.read()))
  stops = [line for line in texts[0].splitlines() if line.startswith("SIGTERM: stopping after")]
  assert len(stops) == 1, texts[0]
  return int(stops[0].split()[4].rstrip(";")), texts


def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(tmp_path):
  assert jax.device_count() == 8
  workdir = tmp_path / "run"
  stop, outputs = _run_workers(workdir, tmp_path)
  assert stop > CONTROL_STEP
  assert outputs[1] == ""  # logs, metrics and plots come from process 0 only
  assert (workdir / "mixture.png").is_file()
  rows = _rows(workdir)
  losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
  assert sorted(losses) == list(range(1, stop + 1))  # one row per step: one writer
  checkpoints = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                       if p.name.isdigit())
  assert checkpoints == [stop]

  config = _config()
  tokenizer = ByteTokenizer()
  mixture = make_mixture(tokenizer, curriculum=config.curriculum, seq_len=config.train.seq_len)
  names = mixture.names
  mixtures = {r["step"]: np.asarray([r[f"mixture/{n}"] for n in names], np.float64)
              for r in rows if f"mixture/{names[0]}" in r}
  weights = {step: np.maximum(w, 0.0) / np.maximum(w, 0.0).sum() for step, w in mixtures.items()}
  assert not np.allclose(weights[CONTROL_STEP], weights[1])
  # The mixture is checkpointed once: the controller state holds the latest one, and both
  # processes' data files hold their positions and the mixture's fingerprint, not its weights.
  latest = weights[max(s for s in weights if s <= stop)]
  controller = Controller.from_config(config.controller, total_steps=config.train.steps,
                                      class_of_config=mixture.curriculum.class_index)
  checkpointer = Checkpointer(str(workdir / "checkpoints"), max_to_keep=1, async_save=False)
  saved_controller = checkpointer.restore_controller(stop, jax.eval_shape(controller.init))
  checkpointer.close()
  np.testing.assert_allclose(controller.mixture_weights(saved_controller), latest, rtol=1e-12)
  for index in range(PROCESSES):
    saved = json.loads((workdir / "checkpoints" / str(stop) / "data" /
                        f"process_{index}-of-{PROCESSES}.json").read_text())
    assert planner_states(saved)
    assert all(state_weights(planner) is None for planner in planner_states(saved))

  # The reference: one process, 8 devices, the workers' per-process shards as one global batch.
  docs = {split: load_documents("embedded", split, val_fraction=config.data.val_fraction)
          for split in ("train", "validation")}
  local = config.train.batch_size // PROCESSES
  shards = [iter(make_train_dataset(docs["train"], tokenizer, seq_len=config.train.seq_len,
                                    batch_size=local, seed=config.seed, process_index=p,
                                    process_count=PROCESSES, make_example=mixture))
            for p in range(PROCESSES)]

  def val_batches(make_example, batch_size, num_batches, seed):
    per_process = [make_validation_batches(
        docs["validation"][p::PROCESSES], tokenizer, seq_len=config.train.seq_len,
        batch_size=batch_size, num_batches=num_batches, seed=seed, make_example=make_example)
                   for p in range(PROCESSES)]
    return [to_global(list(parts)) for parts in zip(*per_process)]

  mesh = make_mesh(config.mesh.shape)
  setup = make_train_setup(config, tokenizer.vocab_size, mesh)

  def to_global(parts):
    return {k: jax.device_put(np.concatenate([p[k] for p in parts]),
                              batch_sharding(mesh, setup.rules, parts[0][k].ndim))
            for k in parts[0]}

  state = init_train_state(config, setup, tokenizer.vocab_size)
  train_step, eval_step = make_train_step(setup, config.train), make_eval_step(setup)
  with jax.set_mesh(mesh):
    validation = val_batches(mixture, local, config.train.eval_batches, config.seed)
    # The controller's fixed sets: val_rows (4) rounded up to the 8 batch shards, 4 per process.
    checked = (names[0], names[len(names) // 2], names[-1])
    controller_sets = {n: val_batches(mixture.only(n), local, 1, config.seed + 1)
                       for n in checked}
    for step in range(1, stop + 1):
      state, metrics = train_step(state, to_global([next(s) for s in shards]))
      np.testing.assert_allclose(float(metrics["loss"]), losses[step], rtol=2e-5)
      if step % config.train.eval_every == 0:
        logged = next(r["val_loss"] for r in rows if r["step"] == step and "val_loss" in r)
        np.testing.assert_allclose(mean_eval_loss(eval_step, state.params, validation), logged,
                                   rtol=2e-5)
      if step == CONTROL_STEP:  # the controller's per-configuration losses are global means
        logged = next(r for r in rows if r["step"] == step and "reward/total" in r)
        for name in checked:
          np.testing.assert_allclose(mean_eval_loss(eval_step, state.params,
                                                    controller_sets[name]),
                                     logged[f"val_loss/{name}"], rtol=2e-5)
      if step in weights:
        for shard in shards:
          set_mixture_weights(shard, weights[step])

    # The workers' checkpoint, restored in this one process: the same params, the same next loss.
    restored = Checkpointer(str(workdir / "checkpoints"), max_to_keep=1,
                            async_save=False).restore_params(stop, setup)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(restored), jax.device_get(state.params))
    after = [to_global([next(s) for s in shards])]
    np.testing.assert_allclose(mean_eval_loss(eval_step, restored, after),
                               mean_eval_loss(eval_step, state.params, after), rtol=1e-6)


def test_distributed_settings_from_flags_environment_or_cluster():
  explicit = {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
  on_tpu_vm = distributed.on_tpu_vm()  # JAX then reads the TPU metadata
  assert distributed.resolve(environ={}) == ({} if on_tpu_vm else None)
  assert distributed.resolve("10.0.0.1:1234", 2, 1, environ={}) == explicit
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
         "JAX_PROCESS_ID": "1"}
  assert distributed.resolve(environ=env) == explicit
  assert distributed.resolve(process_id=0, environ=env)["process_id"] == 0  # a flag wins
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "4",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
  assert distributed.resolve(environ=slurm) == {}  # JAX detects the cluster itself
  mpi = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "2",
         "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}
  assert distributed.resolve(environ=mpi) == {}
  if not on_tpu_vm:  # one task, or no srun step: one process
    assert distributed.resolve(environ={**slurm, "SLURM_NTASKS": "1"}) is None
    assert distributed.resolve(environ={"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}) is None
  assert distributed.resolve(num_processes=1, environ=slurm) is None
  with pytest.raises(ConfigError, match="also needs --coordinator_address"):
    distributed.resolve(num_processes=2, process_id=0, environ={})
  with pytest.raises(ConfigError, match=r"--process_id must be in \[0, 2\), got 2"):
    distributed.resolve("h:1", 2, 2, environ={})
  with pytest.raises(ConfigError, match="need --num_processes"):
    distributed.resolve("h:1", environ={})


def test_gloo_notes_are_dropped_also_when_threads_interleave_them():
  def note(rank: int) -> str:
    return f"{_GLOO_PIECES[0]}{rank}{_GLOO_PIECES[1]}7{_GLOO_PIECES[2]}7\n"
  interleaved = note(4)[:len(_GLOO_PIECES[0])] + note(5) + note(4)[len(_GLOO_PIECES[0]):]
  ours = "SIGTERM: stopping after 5; 1 checkpoint\n"
  assert _without_gloo_notes(note(6) + interleaved + ours + note(7)) == ours
  assert _without_gloo_notes(interleaved + "loss 4.2\n") == "loss 4.2\n"
