"""Fine-tuning on evaluation tasks before evaluating them (the paper's A.9 phonebook protocol).

Birdie fine-tunes every model on phonebook examples before the multi-phonebook evaluation: 1,000
steps, batch 64, constant learning rate 5e-5, no weight decay, examples of 200-800 entries and
1-32 queries packed into 16,384-token rows. `finetune` does the same at any scale: examples come
from the tasks' own generators (`Task.training_examples`, seeds disjoint from the evaluation's),
are laid out exactly as the evaluator prompts them (same layout and paradigm tokens), packed
greedily into rows of the evaluation context, and trained on their targets only (the `scored`
tokens) with AdamW at a constant learning rate from the run's params and a fresh optimizer.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from birdie_jax.evals import tasks as task_registry
from birdie_jax.evals.layout import Row
from birdie_jax.evals.runner import Evaluator
from birdie_jax.parallel.sharding import batch_sharding
from birdie_jax.console import log_progress
from birdie_jax.train.state import TrainState, make_train_setup
from birdie_jax.train.step import make_train_step


def finetune_config(config: ml_collections.ConfigDict, *, steps: int, batch_size: int,
                    seq_len: int, learning_rate: float) -> ml_collections.ConfigDict:
  """`config` with its `train` group set for fine-tuning: constant learning rate (no warm-up, no
  decay), no weight decay, the given steps, batch and row length."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.train.steps = steps
  out.train.batch_size = batch_size
  out.train.seq_len = seq_len
  out.train.learning_rate = learning_rate
  out.train.warmup_steps = 0
  out.train.end_lr_ratio = 1.0
  out.train.weight_decay = 0.0
  return out


def training_batches(evaluator: Evaluator, task_names: Sequence[str], *, batch_size: int,
                     seed: int, difficulties: dict[str, Sequence[int]] | None = None
                     ) -> Iterator[Row]:
  """Endless packed batches of fine-tuning examples, the tasks taking turns example by example.

  `difficulties` may replace a task's sweep as the pool its training difficulties are drawn from
  (e.g. phonebook: 1..32 numbers, as A.9 trains); those that do not fit the context are dropped.
  """
  tasks = task_registry.build_tasks(task_names, evaluator.context)
  pools = {t.name: [d for d in (difficulties or {}).get(t.name, t.sweep) if t.fits(d)]
           for t in tasks}
  seq_len, layout = evaluator.seq_len, evaluator.layout
  rows: list[list[Row]] = [[]]
  index = 0
  while True:
    task = tasks[index % len(tasks)]
    example = task.training_examples(seed, index // len(tasks), 1, pools[task.name])[0]
    segment = layout.segment(example.prompt, example.target, evaluator.paradigm_id(task),
                             example.scored)
    index += 1
    if sum(len(s["inputs"]) for s in rows[-1]) + len(segment["inputs"]) > seq_len:
      rows.append([])
    rows[-1].append(segment)
    if len(rows) > batch_size:
      yield layout.pack([s for row in rows[:batch_size] for s in row], seq_len)
      rows = rows[batch_size:]


def finetune(evaluator: Evaluator, config: ml_collections.ConfigDict, params, *,
             task_names: Sequence[str], steps: int, batch_size: int, learning_rate: float,
             seed: int = 0, log_every: int = 50,
             difficulties: dict[str, Sequence[int]] | None = None):
  """`params` after `steps` fine-tuning steps on `task_names`; returns (params, losses).

  The model is `config`'s (as built for `evaluator`); rows are the evaluator's context long.
  """
  ft_config = finetune_config(config, steps=steps, batch_size=batch_size,
                              seq_len=evaluator.seq_len, learning_rate=learning_rate)
  mesh = evaluator.setup.mesh
  setup = make_train_setup(ft_config, evaluator.tokenizer.vocab_size, mesh)

  def init(params) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=setup.tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32))

  pi, pc = jax.process_index(), jax.process_count()
  local = batch_size // pc
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=setup.state_shardings)(params)
    step_fn = make_train_step(setup, ft_config.train)
    batches = training_batches(evaluator, task_names, batch_size=batch_size, seed=seed,
                               difficulties=difficulties)
    losses, start = [], time.perf_counter()
    for step in range(1, steps + 1):
      batch = {k: jax.make_array_from_process_local_data(
          batch_sharding(mesh, setup.rules, v.ndim), v[pi * local:(pi + 1) * local])
               for k, v in next(batches).items()}
      state, metrics = step_fn(state, batch)
      if step % log_every == 0 or step in (1, steps):
        losses.append((step, float(jax.device_get(metrics["loss"]))))
        log_progress(f"fine-tune step {step}/{steps} | loss {losses[-1][1]:.4f} | "
                     f"{time.perf_counter() - start:.0f}s")
  return state.params, np.array(losses)
