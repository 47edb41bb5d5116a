"""Objective competence: did a run learn its own objectives? Per objective class of its curriculum,
the held-out loss and teacher-forced token accuracy in the training layout.

    run = trained_run.load_run("workdirs/base")
    result = objective_competence(run.config, run.tokenizer, run.setup, run.params, step=run.step)
    result["classes"]["copying"]              # {'loss', 'accuracy', 'tokens', 'configurations'}
    python -m birdie_jax.evaluate --workdir=workdirs/base --tasks=objectives

The rows are the ones the run itself scored, built by the same pipeline calls from the run's
validation split (packed exactly as training packs them, each configuration's examples alone):
  birdie, birdie_causal  the controller's validation sets (`MixtureControl`: seed + 1,
                         `controller.val_rows` rows rounded up to the batch shards), so a class's
                         loss at the final step equals the mean of the run's logged
                         `val_loss/<configuration>` over the class;
  ntp, ul2, fixed_ratio  the loop's validation recipe (seed, `train.batch_size` rows,
                         `train.eval_batches` batches) per configuration: for ntp, whose only
                         configuration is the whole mixture, exactly the run's `val_loss` batches.
`rows` / `batches` override the recipe (more rows: a tighter estimate, no longer the run's own).
A class's loss and accuracy are means over its configurations, as the controller's class means.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from birdie_jax.controller.settings import CONTROLLED_CURRICULA
from birdie_jax.data.curriculum import make_mixture
from birdie_jax.data.pipeline import make_validation_sets
from birdie_jax.data.sources import run_documents
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models.forward import batch_logits
from birdie_jax.models.placed import PlacedModel
from birdie_jax.objectives.mixture import Mixture
from birdie_jax.parallel.sharding import batch_sharding

Recipe = dict[str, int]  # seed, rows (global), batches


def run_mixture(config: ml_collections.ConfigDict, tokenizer) -> Mixture:
  """The run's objective mixture at its starting weights (configurations as trained)."""
  return make_mixture(tokenizer, curriculum=config.curriculum, seq_len=config.train.seq_len,
                      length_scale=config.data.length_scale,
                      class_weights=config.data.class_weights)


def validation_recipe(config: ml_collections.ConfigDict, mesh, *, rows: int = 0,
                      batches: int = 0) -> Recipe:
  """Seed, global rows per batch and batches per configuration of the sets the run scored."""
  if rows < 0 or batches < 0:
    raise ConfigError(f"objective rows and batches must be >= 0, got {rows} and {batches}")
  shards = math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
  if config.curriculum in CONTROLLED_CURRICULA:  # as MixtureControl.build_validation_sets
    recipe = {"seed": config.seed + 1, "rows": -(-config.controller.val_rows // shards) * shards,
              "batches": 1}
  else:  # as the loop's val_batches
    recipe = {"seed": config.seed, "rows": config.train.batch_size,
              "batches": config.train.eval_batches}
  if rows:
    if rows % shards:
      raise ConfigError(f"objective rows ({rows}) must be a multiple of {shards} (the mesh's "
                        "data x fsdp size and the process count)")
    recipe["rows"] = rows
  recipe["batches"] = batches or recipe["batches"]
  return recipe


def _score_fn(placed: PlacedModel):
  """A jitted (params, batch) -> sums of target loss, argmax hits and target weight."""

  def score(params, batch) -> dict[str, jax.Array]:
    logits = batch_logits(placed, params, batch)  # as forward.token_losses
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    hits = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
    mask = batch["loss_mask"]
    return {"loss": jnp.sum(ce * mask), "hits": jnp.sum(hits * mask), "tokens": jnp.sum(mask)}

  return jax.jit(score, in_shardings=(placed.param_shardings, None))


def _configuration_scores(score, params, batches, mesh, rules) -> dict[str, float]:
  """Mean loss and accuracy per target token over one configuration's batches."""
  sums = {"loss": 0.0, "hits": 0.0, "tokens": 0.0}
  for batch in batches:  # one in flight at a time, as forward.mean_eval_loss
    placed = {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
              for k, v in batch.items()}
    for key, value in jax.device_get(score(params, placed)).items():
      sums[key] += float(value)
  tokens = max(sums["tokens"], 1.0)
  return {"loss": sums["loss"] / tokens, "accuracy": sums["hits"] / tokens,
          "tokens": sums["tokens"]}


def objective_competence(config: ml_collections.ConfigDict, tokenizer: Tokenizer,
                         placed: PlacedModel, params, *, step: int, rows: int = 0,
                         batches: int = 0) -> dict:
  """Per configuration and per class of a run's curriculum: held-out loss (nats per target token)
  and teacher-forced token accuracy of `params` (the run's checkpoint of training step `step`,
  on `placed`) on the validation rows described in the module docstring.

  Returns a JSON-able dict: step, curriculum, seed, rows, batches, `configurations`
  {name: {class, loss, accuracy, tokens}} and `classes` {class: {loss, accuracy, tokens,
  configurations}} in the curriculum's class order.
  """
  mixture = run_mixture(config, tokenizer)
  recipe = validation_recipe(config, placed.mesh, rows=rows, batches=batches)
  pi, pc = jax.process_index(), jax.process_count()
  documents = run_documents(config.data, "validation")  # of data.source, or a data.sources mix
  sets = make_validation_sets(documents[pi::pc], tokenizer, mixture,
                              seq_len=config.train.seq_len, batch_size=recipe["rows"] // pc,
                              num_batches=recipe["batches"], seed=recipe["seed"],
                              gap=config.data.gap)
  score = _score_fn(placed)
  curriculum = mixture.curriculum
  configurations = {}
  with jax.set_mesh(placed.mesh):
    for name, c in zip(mixture.names, curriculum.configurations):
      configurations[name] = {"class": c.objective, **_configuration_scores(
          score, params, sets[name], placed.mesh, placed.rules)}
  classes = {}
  for cls in curriculum.classes:
    members = [v for v in configurations.values() if v["class"] == cls]
    classes[cls] = {"loss": float(np.mean([v["loss"] for v in members])),
                    "accuracy": float(np.mean([v["accuracy"] for v in members])),
                    "tokens": float(sum(v["tokens"] for v in members)),
                    "configurations": len(members)}
  return {"step": int(step), "curriculum": config.curriculum, **recipe,
          "configurations": configurations, "classes": classes}
