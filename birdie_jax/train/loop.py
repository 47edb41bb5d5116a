"""`train_and_evaluate(config, workdir)`: the whole training job, callable from `main` or a notebook.

Workdir layout:
    run.json            what defines the run, checked at every start (train/identity.py)
    config.json         the config of the latest start (config.<n>.json: the ones it replaced)
    tokenizer/run.model the run's sentencepiece model, pinned at its first start (never retrained)
    lock.json           the running job's lock: host, pid, start, heartbeat (train/workdir_lock.py)
    checkpoints/<step>/ Orbax checkpoints {state, data, meta}
    metrics.jsonl       one JSON object per logged step (step, loss, learning_rate, tokens_per_s, ...);
                        steps after a checkpoint are logged again when a run resumes from it or
                        rolls back to it, and the last row of a step is the one that counts
    tensorboard/        the same scalars for TensorBoard
    eval/<step>.*       retrieval evaluations every `eval.every` steps (json, md, png per task;
                        `evaluate` also writes eval/<step>-<task>.json as each task finishes)
"""
from __future__ import annotations

import math
import os
import time

import jax
import ml_collections
import numpy as np

from birdie_jax.config import validate_config
from birdie_jax.console import log_progress, log_warning
from birdie_jax.controller.settings import CONTROLLED_CURRICULA
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.lookahead import Lookahead
from birdie_jax.data.packing import padding_fraction
from birdie_jax.data.pipeline import make_train_dataset, make_validation_batches
from birdie_jax.data.sources import load_documents, skipped_note
from birdie_jax.errors import ConfigError
from birdie_jax.evals.runner import Evaluator
from birdie_jax.models.forward import make_eval_step, mean_eval_loss
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.parallel.sharding import batch_sharding, check_batch_layout, validate_rules
from birdie_jax.train.checkpointing import Checkpointer, param_shapes
from birdie_jax.train.identity import check_resume
from birdie_jax.train.mixture_control import MixtureControl
from birdie_jax.train.metrics import MetricsWriter, Throughput
from birdie_jax.train.metrics import progress_line
from birdie_jax.train.nonfinite import NonFiniteGuard
from birdie_jax.train.preemption import PreemptionSignal, stopped_by_error
from birdie_jax.train.state import init_train_state, make_train_setup
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


def _controller_line(step: int, scalars: dict[str, float], classes) -> str:
  weights = ", ".join(f"{c} {scalars[f'mixture_class/{c}']:.2f}" for c in classes)
  reward = f" | reward {scalars['reward/total']:+.3f}" if "reward/total" in scalars else ""
  compiled = scalars["controller/compile_s"]
  compiled = f" (+{compiled:.1f}s compiling)" if compiled else ""
  return (f"step {step} controller: {len(classes)} classes evaluated in "
          f"{scalars['controller/eval_s']:.1f}s, updated in {scalars['controller/update_s']:.2f}s"
          f"{compiled}{reward} | mixture: {weights}")


def _eval_line(step: int, scalars: dict[str, float]) -> str:
  return f"step {step} eval: " + ", ".join(
      f"{k.removeprefix('eval/')} {v:.3f}" for k, v in sorted(scalars.items()))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir` up to `config.train.steps`; returns final metrics.

  The job holds the workdir's lock throughout (train/workdir_lock.py): a second start refuses.
  """
  validate_config(config)
  check_writable(workdir)  # a file or read-only path: one line now, not at the first save
  with hold_workdir(workdir, config.checkpoint.lock_stale_s):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  mesh = make_mesh(config.mesh.shape)
  rules = tuple(tuple(r) for r in config.mesh.axis_rules)
  validate_rules(rules, mesh.axis_names)
  _check_batch(config, mesh)
  check_batch_layout(mesh, rules, config.train.batch_size, config.train.seq_len)
  resume = check_resume(config, workdir)  # a changed run stops here, before anything is read
  train_docs = load_documents(config.data.source, "train", val_fraction=config.data.val_fraction,
                              text_field=config.data.text_field,
                              document_separator=config.data.document_separator)
  val_docs = load_documents(config.data.source, "validation",
                            val_fraction=config.data.val_fraction,
                            text_field=config.data.text_field,
                            document_separator=config.data.document_separator)
  if skipped_note(train_docs.stats):
    log_warning(f"data source {config.data.source}: {skipped_note(train_docs.stats)}")
  tokenizer = resume.tokenizer(config.data, train_docs)  # pinned to the run
  mixture = make_mixture(tokenizer, curriculum=config.curriculum, seq_len=config.train.seq_len,
                         length_scale=config.data.length_scale,
                         class_weights=config.data.class_weights)
  control = (MixtureControl(config, mixture) if config.curriculum in CONTROLLED_CURRICULA
             else None)
  setup = make_train_setup(config, tokenizer.vocab_size, mesh)
  if jax.process_index() == 0:
    print(f"{config.model.family}: {setup.num_params:,} parameters | vocab "
          f"{tokenizer.vocab_size} | mesh {dict(mesh.shape)} | {jax.device_count()} devices",
          flush=True)

  local_batch = config.train.batch_size // jax.process_count()
  pi, pc = jax.process_index(), jax.process_count()
  dataset = make_train_dataset(
      train_docs, tokenizer, seq_len=config.train.seq_len, batch_size=local_batch,
      seed=config.seed, process_index=pi, process_count=pc, make_example=mixture,
      gap=config.data.gap, num_workers=config.data.num_workers)
  data_iter = Lookahead(iter(dataset), retries=config.data.read_retries)
  val_batches = [_to_global(b, mesh, rules) for b in make_validation_batches(
      val_docs[pi::pc], tokenizer, seq_len=config.train.seq_len, batch_size=local_batch,
      num_batches=config.train.eval_batches, seed=config.seed, make_example=mixture,
      gap=config.data.gap)]
  if control is not None:
    control.build_validation_sets(val_docs[pi::pc], tokenizer,
                                  lambda b: _to_global(b, mesh, rules),
                                  math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], pc))

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.checkpoint.max_to_keep,
                              async_save=config.checkpoint.async_save,
                              restore_retries=config.checkpoint.restore_retries)
  restored = checkpointer.restore_latest(
      setup, data_iter, None if control is None else control.abstract_state())
  if restored is None:
    state = init_train_state(config, setup, tokenizer.vocab_size)
  else:
    latest, state, controller_state = restored
    if control is not None:
      control.state = controller_state
    log_progress(f"resumed from step {latest} in {workdir}")
  if jax.process_index() == 0:
    resume.record_start(config, tokenizer)  # run.json and config.json, once all checks passed
  start = int(jax.device_get(state.step))
  total = config.train.steps
  meta = {"param_shapes": param_shapes(setup.abstract_state.params),
          "num_params": setup.num_params, "vocab_size": tokenizer.vocab_size}
  train_step = make_train_step(setup, config.train)
  eval_step = make_eval_step(setup)
  evaluator = Evaluator(config, tokenizer, setup) if config.eval.every else None
  writer = MetricsWriter(workdir)
  throughput = Throughput(config.train.batch_size * config.train.seq_len,
                          6.0 * setup.num_params, start)
  final: dict[str, float] = {}
  run_start, timed_from = time.perf_counter(), None
  reached = start
  guard = NonFiniteGuard(config.train.max_nonfinite_in_a_row)
  step = start
  try:
    with jax.set_mesh(mesh), PreemptionSignal() as preemption:
      if start >= total:
        log_progress(f"run already finished at step {start} (train.steps={total})")
      while step < total:
        step += 1
        host_batch = next(data_iter)
        state, metrics = train_step(state, _to_global(host_batch, mesh, rules))
        if step < total:
          data_iter.prefetch()  # the next batch is built while the device runs this step
        skipped = bool(jax.device_get(metrics["nonfinite_skipped"]))
        roll_back = guard.observe(skipped)
        if skipped:
          writer.write(step, {"nonfinite_skipped": 1.0, "nonfinite_in_a_row": guard.in_a_row})
          log_progress(f"step {step}/{total} | non-finite loss or gradients: update skipped "
                       f"({guard.in_a_row} in a row; rollback at {guard.max_in_a_row})")
        elif step % config.train.log_every == 0 or step == total or step == start + 1:
          scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
          scalars["padding_fraction"] = padding_fraction(host_batch)  # this process's rows
          scalars.update(throughput.report(step))
          if step % config.train.eval_every == 0 or step == total:
            scalars["val_loss"] = mean_eval_loss(eval_step, state.params, val_batches)
            throughput.restart(step)
          if timed_from is None:
            timed_from = (step, time.perf_counter())
          done = step - timed_from[0]
          rate = (time.perf_counter() - timed_from[1]) / done if done else 0.0
          writer.write(step, scalars)
          log_progress(progress_line(step, total, scalars, rate * (total - step)))
          final = scalars
        elif step % config.train.eval_every == 0:
          val = mean_eval_loss(eval_step, state.params, val_batches)
          writer.write(step, {"val_loss": val})
          throughput.restart(step)
        if control is not None and control.is_eval_step(step):
          controller_scalars = control.update(step, eval_step, state.params, data_iter, workdir)
          writer.write(step, controller_scalars)
          log_progress(_controller_line(step, controller_scalars, mixture.curriculum.classes))
          throughput.restart(step)
        if evaluator is not None and evaluator.is_due(step):
          report = evaluator.run(state.params, step=step)
          writer.write(step, report.scalars)
          if jax.process_index() == 0:
            report.write(os.path.join(workdir, "eval"))
          log_progress(_eval_line(step, report.scalars))
          throughput.restart(step)
        reached = step
        stop = preemption.reached(step)
        if roll_back and not stop:
          checkpointer.wait()
          target = guard.rollback_target(checkpointer.latest_step(), step)
          state = checkpointer.restore_state(target, setup)
          log_progress(f"step {step} | rolled back to checkpoint {target}; the batches since "
                       "then are not replayed")
          step, timed_from = target, None
          throughput.restart(step)
          continue
        periodic = step % config.checkpoint.every_steps == 0 and not guard.in_a_row
        if periodic or step == total or stop:
          checkpointer.save(step, state, data_iter, meta,
                            controller=None if control is None else control.state)
          writer.flush()  # the rows up to a checkpoint are never lost (remote workdirs)
        if stop:
          log_progress(f"{preemption.name}: stopping after step {step}; checkpoint written, "
                       "the same command resumes from it")
          break
  except Exception as error:  # pylint: disable=broad-except  # save what can be saved, one line
    raise stopped_by_error(error, step, checkpointer=checkpointer, state=state, data_iter=data_iter,
                           meta=meta, controller=None if control is None else control.state,
                           in_streak=bool(guard.in_a_row)) from error
  finally:
    checkpointer.close()
    writer.close()
    data_iter.close()
  if reached > start:
    log_progress(f"trained steps {start + 1}-{reached} in {time.perf_counter() - run_start:.1f}s; "
                 f"checkpoints in {workdir}/checkpoints")
  return {"step": float(reached), **final}
