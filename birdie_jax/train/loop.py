"""`train_and_evaluate(config, workdir)`: the whole training job, for `main` or a notebook.

`_build_run` makes the run's pieces in sections (mesh, run identity, inputs, model, restored
state, periodic actions); the inputs (`Inputs`: tokenizer, batches, validation, first state) are
pre-training's documents and objective mixture (`_pretraining_inputs`), or what another maker
passed to `train_and_evaluate` makes (instruction tuning: train/sft.py). `_train` then reads, per
step:
    train step -> non-finite guard -> the actions due (train/actions.py: validation loss, the
    mixture controller, evaluations) -> one metrics row -> a rollback after a non-finite
    streak, or a checkpoint (periodic, last step, or a signal's stop) and the stop.
A new periodic job is one class in train/actions.py and one entry in `_build_run`'s list.

Workdir layout:
    run.json            what defines the run, checked at every start (train/identity.py)
    config.json         the config of the latest start (config.<n>.json: the ones it replaced)
    tokenizer/run.model the run's sentencepiece model, pinned at its first start (never retrained)
    lock.json           the running job's lock: host, pid, start, heartbeat (train/workdir_lock.py)
    checkpoints/<step>/ Orbax checkpoints {state, data, meta}
    metrics.jsonl       one JSON object per step that logs (step, loss, learning_rate, tokens_per_s,
                        val_loss, the controller's and evaluations' scalars at their steps, ...);
                        steps after a checkpoint are logged again when a run resumes from it or
                        rolls back to it, and the last row of a step is the one that counts
    tensorboard/        the same scalars for TensorBoard
    eval/<step>.*       retrieval evaluations every `eval.every` steps (json, md, png per task;
                        `evaluate` also writes eval/<step>-<task>.json as each task finishes)
"""
from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
import math
import os
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from birdie_jax.config import validate_config
from birdie_jax.console import log_progress, log_warning
from birdie_jax.controller.settings import CONTROLLED_CURRICULA
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.lookahead import Lookahead
from birdie_jax.data.packing import padding_fraction
from birdie_jax.data.pipeline import make_train_dataset, make_validation_batches
from birdie_jax.data.sources import run_documents, skipped_note
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.evals.runner import Evaluator
from birdie_jax.models.forward import make_eval_step
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding, check_batch_layout, validate_rules
from birdie_jax.train.actions import Action, Checkpoint, Evaluation, MixtureController
from birdie_jax.train.checkpointing import Checkpointer, param_shapes
from birdie_jax.train.identity import Resume, check_resume
from birdie_jax.train.mixture_control import MixtureControl
from birdie_jax.train.metrics import Eta, MetricsWriter, Throughput, progress_line
from birdie_jax.train.init_from import check_init_from, init_params
from birdie_jax.train.nonfinite import NonFiniteGuard
from birdie_jax.train.preemption import PreemptionSignal, stopped_by_error
from birdie_jax.train.source_metrics import source_tokens, validation_batches, validation_loss
from birdie_jax.train.state import TrainSetup, TrainState, init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step
from birdie_jax.train.workdir_lock import hold_workdir
from birdie_jax.workdir import check_writable


def _check_batch(config: ml_collections.ConfigDict, mesh) -> None:
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % batch_shards:
    raise ConfigError(f"train.batch_size ({config.train.batch_size}) must be divisible by the "
                      f"mesh's data x fsdp size ({batch_shards})")
  if config.train.batch_size % jax.process_count():
    raise ConfigError(f"train.batch_size ({config.train.batch_size}) must be divisible by the "
                      f"number of processes ({jax.process_count()})")
  if config.train.seq_len < 2:
    raise ConfigError(f"train.seq_len must be at least 2, got {config.train.seq_len}")


def _to_global(batch: dict[str, np.ndarray], mesh, rules) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
          for k, v in batch.items()}


@dataclasses.dataclass
class Run:
  """One training job's pieces, as `_build_run` makes them; the loop only reads them."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  rules: tuple
  tokenizer: Tokenizer
  mixture: Mixture | None  # None: inputs without an objective mixture (instruction tuning)
  control: MixtureControl | None  # Birdie's controller, for the curricula that have one
  setup: TrainSetup
  data_iter: Lookahead  # training batches, read one ahead
  checkpointer: Checkpointer
  state: TrainState  # restored from the newest checkpoint, or fresh
  start: int  # the state's step
  train_step: Callable
  writer: MetricsWriter
  throughput: Throughput
  guard: NonFiniteGuard
  actions: list[Action]  # due after a step, before its metrics row
  checkpoint: Checkpoint  # after the row, and when a signal asks to stop


@dataclasses.dataclass
class Inputs:
  """What a run trains on, made after the run-identity check and before the model: pre-training's
  (`_pretraining_inputs`), or another maker's passed to `train_and_evaluate`. The rest of the
  run (model, checkpoints and resume, metrics, actions, faults) is the same for every maker."""
  tokenizer: Tokenizer  # pinned to the run
  data_iter: Lookahead  # this process's training batches
  validation: Callable[[Callable, NonFiniteGuard], Action]  # (eval step, guard) -> val-loss action
  init_state: Callable[[TrainSetup], TrainState] | None = None  # first start (None: fresh params)
  mixture: Mixture | None = None
  control: MixtureControl | None = None  # Birdie's controller, for the curricula that have one


MakeInputs = Callable[[ml_collections.ConfigDict, Resume, Mesh, tuple], Inputs]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       make_inputs: MakeInputs | None = None) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir` up to `config.train.steps`; returns final metrics
  (the last logged step's row, with `step` the last step trained). `make_inputs(config, resume,
  mesh, rules)` replaces pre-training's inputs (instruction tuning: train/sft.py).

  The job holds the workdir's lock throughout (train/workdir_lock.py): a second start refuses.
  """
  validate_config(config)
  check_writable(workdir)  # a file or read-only path: one line now, not at the first save
  with hold_workdir(workdir, config.checkpoint.lock_stale_s):
    return _train(_build_run(config, workdir, make_inputs or _pretraining_inputs))


def _build_run(config: ml_collections.ConfigDict, workdir: str, make_inputs: MakeInputs) -> Run:
  """Builds the run, each check before the first read it guards (a changed run stops before its
  data is indexed; run.json records a start only once the restore has passed)."""
  # ## Mesh: a shape or batch that cannot be laid out stops here.
  mesh = make_mesh(config.mesh.shape)
  rules = tuple(tuple(r) for r in config.mesh.axis_rules)
  validate_rules(rules, mesh.axis_names)
  _check_batch(config, mesh)
  check_batch_layout(mesh, rules, config.train.batch_size, config.train.seq_len)
  resume = check_resume(config, workdir)  # a changed run stops here, before anything is read
  check_init_from(config, first_start=resume.record is None and not resume.legacy)

  # ## Inputs: the pinned tokenizer, training and validation batches (pre-training: documents,
  # the objective mixture and its controller).
  inputs = make_inputs(config, resume, mesh, rules)
  tokenizer, mixture, control = inputs.tokenizer, inputs.mixture, inputs.control
  data_iter = inputs.data_iter

  # ## Model and optimizer, placed on the mesh.
  setup = make_train_setup(config, tokenizer.vocab_size, mesh)
  if jax.process_index() == 0:
    print(f"{config.model.family}: {setup.num_params:,} parameters | vocab "
          f"{tokenizer.vocab_size} | mesh {dict(mesh.shape)} | {jax.device_count()} devices",
          flush=True)

  # ## State: the newest checkpoint that restores whole (data position, controller), or fresh.
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep,
                              async_save=config.checkpoint.async_save,
                              restore_retries=config.checkpoint.restore_retries)
  state = _restore_or_init(config, workdir, checkpointer, setup, data_iter, control,
                           tokenizer.vocab_size, inputs.init_state)
  start = int(jax.device_get(state.step))
  if jax.process_index() == 0:  # run.json (this start appended) and config.json, once all passed
    resume.record_start(config, tokenizer, start)

  # ## Periodic actions, metrics and the train step.
  meta = {"param_shapes": param_shapes(setup.abstract_state.params),
          "num_params": setup.num_params, "vocab_size": tokenizer.vocab_size}
  train_step = make_train_step(setup, config.train)
  eval_step = make_eval_step(setup)
  evaluator = Evaluator(config, tokenizer, setup) if config.eval.every else None
  writer = MetricsWriter(workdir)
  throughput = Throughput(config.train.batch_size * config.train.seq_len,
                          6.0 * setup.num_params, start)
  guard = NonFiniteGuard(config.train.max_nonfinite_in_a_row)
  total = config.train.steps
  controller = (None if control is None
                else MixtureController(control, eval_step, data_iter, workdir))
  actions = [inputs.validation(eval_step, guard),
             *([controller] if controller else []),
             *([Evaluation(evaluator, workdir)] if evaluator else [])]
  checkpoint = Checkpoint(checkpointer, data_iter, meta, writer,
                          every=config.checkpoint.every_steps, total=total, guard=guard,
                          controller=controller)
  return Run(config=config, workdir=workdir, mesh=mesh, rules=rules, tokenizer=tokenizer,
             mixture=mixture, control=control, setup=setup, data_iter=data_iter,
             checkpointer=checkpointer, state=state, start=start, train_step=train_step,
             writer=writer, throughput=throughput, guard=guard, actions=actions,
             checkpoint=checkpoint)


def _pretraining_inputs(config: ml_collections.ConfigDict, resume: Resume, mesh: Mesh,
                        rules: tuple) -> Inputs:
  """Pre-training's inputs: documents, the run's pinned tokenizer, the objective mixture and its
  controller; this process's training batches and the fixed validation sets."""
  # ## Data: documents, the run's pinned tokenizer, the objective mixture and its controller.
  train_docs = _documents(config, "train")
  val_docs = _documents(config, "validation")
  if skipped_note(train_docs.stats):
    log_warning(f"data source {config.data.source}: {skipped_note(train_docs.stats)}")
  tokenizer = resume.tokenizer(config.data, train_docs)  # pinned to the run
  mixture = make_mixture(tokenizer, curriculum=config.curriculum, seq_len=config.train.seq_len,
                         length_scale=config.data.length_scale,
                         class_weights=config.data.class_weights)
  control = (MixtureControl(config, mixture) if config.curriculum in CONTROLLED_CURRICULA
             else None)

  # ## Input pipelines: this process's training batches and the fixed validation sets.
  pi, pc = jax.process_index(), jax.process_count()
  local_batch = config.train.batch_size // pc
  dataset = make_train_dataset(
      train_docs, tokenizer, seq_len=config.train.seq_len, batch_size=local_batch,
      seed=config.seed, process_index=pi, process_count=pc, make_example=mixture,
      gap=config.data.gap, num_workers=config.data.num_workers)
  data_iter = Lookahead(iter(dataset), retries=config.data.read_retries)
  val_batches = validation_batches(val_docs, lambda docs: [  # per source for data.sources
      _to_global(b, mesh, rules) for b in make_validation_batches(
          docs[pi::pc], tokenizer, seq_len=config.train.seq_len, batch_size=local_batch,
          num_batches=config.train.eval_batches, seed=config.seed, make_example=mixture,
          gap=config.data.gap)])
  if control is not None:
    control.build_validation_sets(val_docs[pi::pc], tokenizer,
                                  lambda b: _to_global(b, mesh, rules),
                                  math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], pc))
  return Inputs(
      tokenizer=tokenizer, data_iter=data_iter, mixture=mixture, control=control,
      validation=lambda eval_step, guard: validation_loss(
          eval_step, val_batches, val_docs, every=config.train.eval_every,
          total=config.train.steps, guard=guard))


def _documents(config: ml_collections.ConfigDict, split: str):
  """The documents of `split` ('train' or 'validation') of the run's data source (or of every
source of its `data.sources` mixture)."""
  return run_documents(config.data, split)


def _restore_or_init(config: ml_collections.ConfigDict, workdir: str, checkpointer: Checkpointer,
                     setup: TrainSetup, data_iter: Lookahead, control: MixtureControl | None,
                     vocab_size: int,
                     init: Callable[[TrainSetup], TrainState] | None = None) -> TrainState:
  """The newest checkpoint's state (moving `data_iter` and `control` to it), or a fresh one
  (`init(setup)` when given: the inputs' own first state)."""
  restored = checkpointer.restore_latest(
      setup, data_iter, None if control is None else control.abstract_state())
  if restored is None:  # a first start: fresh params, or those of `train.init_from`
    if init is not None:
      return init(setup)
    return init_train_state(config, setup, vocab_size, init_params(config, setup, vocab_size))
  latest, state, controller_state = restored
  if control is not None:
    control.state = controller_state
  log_progress(f"resumed from step {latest} in {workdir}")
  return state


def _train(run: Run) -> dict[str, float]:
  """Trains from `run.start` to `train.steps`. Each step: train -> non-finite guard -> the due
  actions -> one metrics row -> a rollback, or a checkpoint and a stop if a signal asked."""
  start, total = run.start, run.config.train.steps
  state, step, reached, final = run.state, start, start, {}
  pending: dict[str, float] = {}  # the row of a step not written yet
  eta, run_start = Eta(), time.perf_counter()
  try:
    with jax.set_mesh(run.mesh), PreemptionSignal() as preemption:
      if start >= total:
        log_progress(f"run already finished at step {start} (train.steps={total})")
      while step < total:
        step += 1
        host_batch = next(run.data_iter)
        state, metrics = run.train_step(state, _to_global(host_batch, run.mesh, run.rules))
        if step < total:
          run.data_iter.prefetch()  # the next batch is built while the device runs this step
        skipped = bool(jax.device_get(metrics["nonfinite_skipped"]))
        roll_back = run.guard.observe(skipped)
        logged = not skipped and _is_logged(run, step)
        pending = row = _own_row(run, step, metrics, host_batch, skipped, logged)
        lines = _run_actions(run, step, state, row)
        if row:
          run.writer.write(step, row)  # the step's one row: readers take a step's last row
        pending = {}
        if skipped:
          log_progress(_skipped_line(run, step))
        elif logged:
          log_progress(progress_line(step, total, row, eta.seconds_left(step, total)))
          final = row
        for line in lines:
          log_progress(line)
        reached = step
        stop = preemption.reached(step)
        if roll_back and not stop:
          state, step = _roll_back(run, step)
          eta.restart()
          continue
        if run.checkpoint.is_due(step) or stop:
          run.checkpoint.run(step, state)
        if stop:
          log_progress(f"{preemption.name}: stopping after step {step}; checkpoint written, "
                       "the same command resumes from it")
          break
  except Exception as error:  # pylint: disable=broad-except  # save what can be saved, one line
    _write_pending(run.writer, step, pending)
    raise stopped_by_error(error, step, checkpointer=run.checkpointer, state=state,
                           data_iter=run.data_iter, meta=run.checkpoint.meta,
                           controller=run.checkpoint.controller_state(),
                           in_streak=bool(run.guard.in_a_row)) from error
  finally:
    run.checkpointer.close()
    run.writer.close()
    run.data_iter.close()
  if reached > start:
    log_progress(f"trained steps {start + 1}-{reached} in {time.perf_counter() - run_start:.1f}s; "
                 f"checkpoints in {run.workdir}/checkpoints")
  return {"step": float(reached), **final}


def _is_logged(run: Run, step: int) -> bool:
  """Whether `step` logs its training metrics: every `train.log_every` steps, the first step of
  this start and the last step."""
  train = run.config.train
  return step % train.log_every == 0 or step == train.steps or step == run.start + 1


def _own_row(run: Run, step: int, metrics, host_batch: dict[str, np.ndarray], skipped: bool,
             logged: bool) -> dict[str, float]:
  """The train step's own scalars at `step`: the non-finite note of a skipped step, the
  training metrics and throughput of a logged one, else none."""
  if skipped:
    return {"nonfinite_skipped": 1.0, "nonfinite_in_a_row": run.guard.in_a_row}
  if not logged:
    return {}
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
  scalars["padding_fraction"] = padding_fraction(host_batch)  # this process's rows
  if run.config.data.sources:
    scalars.update(source_tokens(run.data_iter))  # source_tokens/<name>, cumulative
  scalars.update(run.throughput.report(step))
  return scalars


def _run_actions(run: Run, step: int, state: TrainState, row: dict[str, float]) -> list[str]:
  """Runs the actions due at `step`, in order, adding their scalars to `row`; their log lines."""
  due = [action for action in run.actions if action.is_due(step)]
  lines = []
  for action in due:
    done = action.run(step, state)
    row.update(done)
    lines.append(action.line(step, done))
  if due:
    run.throughput.restart(step)  # their time is not training time
  return [line for line in lines if line is not None]


def _write_pending(writer: MetricsWriter, step: int, row: dict[str, float]) -> None:
  """Writes the row of a step that an error ended after it trained (its checkpoint may be the one
  a resumed run starts after); best effort: the error being raised is the one to report."""
  if row:
    with contextlib.suppress(Exception):
      writer.write(step, row)


def _skipped_line(run: Run, step: int) -> str:
  """The log line of a step skipped as non-finite."""
  guard = run.guard
  return (f"step {step}/{run.config.train.steps} | non-finite loss or gradients: update skipped "
          f"({guard.in_a_row} in a row; rollback at {guard.max_in_a_row})")


def _roll_back(run: Run, step: int) -> tuple[TrainState, int]:
  """The state of the checkpoint to roll back to after a non-finite streak, and its step; the
  data goes on (the batches since that checkpoint are not replayed)."""
  run.checkpointer.wait()
  target = run.guard.rollback_target(run.checkpointer.latest_step(), step)
  state = run.checkpointer.restore_state(target, run.setup)
  log_progress(f"step {step} | rolled back to checkpoint {target}; the batches since then are "
               "not replayed")
  run.throughput.restart(target)
  return state, target
