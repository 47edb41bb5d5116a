"""`python -m birdie_jax.bench train`: train-step throughput of our models (and RecurrentGemma's).

Each model runs our real `make_train_setup` / `init_train_state` / `make_train_step` on one device
with synthetic packed batches (4 documents a row; in Birdie-bidirectional runs the first quarter
of each document is prefix). Reported: tokens/s (median step time), MFU at 6·N FLOPs per token
against the card's dense bf16 peak (`--peak_tflops`; attention FLOPs are not counted), XLA's
memory estimate of the compiled step (`mem_gb`: arguments + outputs + temporaries; `temp_gb`:
the temporaries alone, where activations and the logits live), and the compile time of the first
step. `--baseline` adds RecurrentGemma's JAX Hawk (`recurrentgemma` package) at the `hawk:rg`
shape. `--loss_chunk=0,256` compares `model.loss_chunk` values (0: the whole batch's float32
logits at once; N: N positions of each row at a time, `models/chunked_loss.py`):

    python -m birdie_jax.bench train --models=hawk:150m --modes=causal --batch=32 \
        --seq_len=2048 --vocab=32000 --loss_chunk=0,128,512
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from birdie_jax import cli
from birdie_jax.bench import harness
from birdie_jax.chips import gpu_peak_tflops
from birdie_jax.config import FAMILIES, default_config
from birdie_jax.models.presets import PRESET_NAMES
from birdie_jax.models.remat import REMAT_CHOICES
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step

# The Hawk shape RecurrentGemma was measured at (issue 7); other names are model.preset values.
RG_HAWK = dict(width=2048, depth=20, lru_width=2560, num_heads=16, mlp_expansion=3.0)
_LAYERS = {True: "scan", False: "loop"}  # model.scan_layers as the bench names it
_COLUMNS = ("model", "scan", "layers", "remat", "loss_chunk", "tokens_per_s", "mfu", "step_ms",
            "params_m", "mem_gb", "temp_gb", "compile_s")


def model_specs(text: str) -> list[str]:
  """argparse type: comma-separated `family:preset` names (`hawk:rg` too), checked at the start
  rather than when their turn comes after hours of other models."""
  specs = [s.strip() for s in text.split(",") if s.strip()]
  for spec in specs or [""]:
    family, _, preset = spec.partition(":")
    if family not in FAMILIES or preset not in PRESET_NAMES + (("rg",) if family == "hawk" else ()):
      raise argparse.ArgumentTypeError(f"{spec!r} is not family:preset (families "
                                       f"{', '.join(FAMILIES)}; presets {', '.join(PRESET_NAMES)}"
                                       f", and hawk:rg)")
  return specs


def loss_chunks(text: str) -> list[int]:
  """argparse type: comma-separated `model.loss_chunk` values (integers >= 0), e.g. 0,256."""
  parts = [p.strip() for p in text.split(",") if p.strip()]
  if not parts:
    raise argparse.ArgumentTypeError(f"must list integers >= 0, e.g. 0,256, got {text!r}")
  return [cli.non_negative_int(p) for p in parts]


def model_config(spec: str, *, bidirectional: bool, scan_impl: str, remat: str,
                 scan_layers: bool, loss_chunk: int = 0):
  """The config for `family:preset` (preset `rg`: the RecurrentGemma Hawk shape)."""
  family, preset = spec.split(":")
  config = default_config()
  config.model.family = family
  if preset == "rg":
    config.model.update(RG_HAWK)
  else:
    config.model.preset = preset
  config.model.bidirectional = bidirectional
  config.model.dtype = "bfloat16"
  config.model.scan_impl = scan_impl
  config.model.remat = remat
  config.model.scan_layers = scan_layers
  config.model.loss_chunk = loss_chunk
  return config


def synthetic_batch(rng: np.random.Generator, batch: int, seq_len: int, vocab: int,
                    bidirectional: bool, docs: int = 4) -> dict[str, np.ndarray]:
  """A packed batch: `docs` documents a row; prefix (no loss) on a quarter of each if bidir."""
  doc_len = -(-seq_len // docs)
  col = np.arange(seq_len)
  segment = np.broadcast_to(col // doc_len + 1, (batch, seq_len)).astype(np.int32)
  position = np.broadcast_to(col % doc_len, (batch, seq_len)).astype(np.int32)
  prefix = (position < doc_len // 4) if bidirectional else np.zeros_like(position, bool)
  tokens = rng.integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "loss_mask": (~prefix).astype(np.float32), "segment_ids": segment,
          "positions": position, "prefix_mask": prefix}


def _memory_gb(compiled) -> float | None:
  """XLA's estimate of the step's device memory: arguments + outputs + temporaries - aliased."""
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    return None
  return total / 2**30


def _temp_gb(compiled) -> float | None:
  """XLA's estimate of the step's temporaries (activations, logits, gradients in flight)."""
  try:
    return compiled.memory_analysis().temp_size_in_bytes / 2**30
  except (AttributeError, NotImplementedError, TypeError):
    return None


def _time_steps(run, state, steps: int) -> tuple[Any, float]:
  """Runs 2 warm-up steps, then `steps` timed ones; returns the state and median seconds."""
  times = []
  for i in range(steps + 2):
    start = time.perf_counter()
    state, loss = run(state)
    jax.block_until_ready(loss)
    if i >= 2:
      times.append(time.perf_counter() - start)
  return state, statistics.median(times)


def _result(name: str, scan: str, seconds: float, tokens: int, num_params: int, compile_s: float,
            mem_gb: float | None, peak_tflops: float | None) -> dict[str, Any]:
  rate = tokens / seconds
  return {"model": name, "scan": scan, "tokens_per_s": rate, "step_ms": seconds * 1e3,
          "params_m": num_params / 1e6, "compile_s": compile_s, "mem_gb": mem_gb,
          "mfu": 6 * num_params * rate / (peak_tflops * 1e12) if peak_tflops else None}


def measure(spec: str, *, bidirectional: bool, scan_impl: str, remat: str, scan_layers: bool,
            args, loss_chunk: int = 0) -> dict[str, Any]:
  """One model: compile the real train step, time `args.steps` steps."""
  config = model_config(spec, bidirectional=bidirectional, scan_impl=scan_impl, remat=remat,
                        scan_layers=scan_layers, loss_chunk=loss_chunk)
  config.train.batch_size, config.train.seq_len = args.batch, args.seq_len
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  start = time.perf_counter()
  setup = make_train_setup(config, args.vocab, mesh)
  setup_s = time.perf_counter() - start
  state = jax.block_until_ready(init_train_state(config, setup, args.vocab))
  init_s = time.perf_counter() - start - setup_s
  batch = synthetic_batch(np.random.default_rng(0), args.batch, args.seq_len, args.vocab,
                          bidirectional)
  with jax.set_mesh(mesh):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    start = time.perf_counter()
    compiled = make_train_step(setup, config.train).lower(state, batch).compile()
    compile_s = time.perf_counter() - start

    def run(state):
      state, metrics = compiled(state, batch)
      return state, metrics["loss"]

    _, seconds = _time_steps(run, state, args.steps)
  name = f"{spec}{':bidir' if bidirectional else ''}"
  return {**_result(name, scan_impl, seconds, args.batch * args.seq_len, setup.num_params,
                   compile_s, _memory_gb(compiled), args.peak_tflops), "remat": remat,
          "layers": _LAYERS[scan_layers], "loss_chunk": loss_chunk, "temp_gb": _temp_gb(compiled),
          "setup_s": setup_s, "init_s": init_s}


def measure_recurrentgemma(scan_type: str, args) -> dict[str, Any]:
  """RecurrentGemma's Hawk at `RG_HAWK` (bf16 compute, f32 params, AdamW), same batch; its
  remat is on unless `--remat` is only `none`."""
  import recurrentgemma.jax as rg  # pylint: disable=g-import-not-at-top  (optional baseline)

  config = rg.GriffinConfig(
      vocab_size=args.vocab, width=RG_HAWK["width"],
      mlp_expanded_width=int(RG_HAWK["mlp_expansion"] * RG_HAWK["width"]),
      num_heads=RG_HAWK["num_heads"], lru_width=RG_HAWK["lru_width"],
      block_types=(rg.TemporalBlockType.RECURRENT,) * RG_HAWK["depth"],
      embeddings_scale_by_sqrt_dim=True, attention_window_size=2048, logits_soft_cap=30.0,
      scan_type=rg.ScanType[scan_type])
  model = rg.Griffin(config, gradient_checkpointing=args.remat != ["none"], dtype=jnp.bfloat16)
  batch = synthetic_batch(np.random.default_rng(0), args.batch, args.seq_len, args.vocab, False)
  tokens, targets = jnp.asarray(batch["inputs"]), jnp.asarray(batch["targets"])
  positions = jnp.asarray(batch["positions"])
  params = jax.jit(model.init)(jax.random.key(0), tokens, positions)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95))
  state = (params, tx.init(params))

  def step(state, tokens, targets, positions):
    params, opt_state = state

    def loss_fn(p):
      logits, _ = model.apply(p, tokens, positions)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, tokens, targets, positions).compile()
  compile_s = time.perf_counter() - start
  _, seconds = _time_steps(lambda s: compiled(s, tokens, targets, positions), state, args.steps)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  return {**_result("recurrentgemma:hawk", scan_type.lower(), seconds, args.batch * args.seq_len,
                   num_params, compile_s, _memory_gb(compiled), args.peak_tflops),
          "remat": "none" if args.remat == ["none"] else "full", "temp_gb": _temp_gb(compiled)}


def main(argv: list[str]) -> None:
  """Parses flags, measures each model, prints the table and appends the JSON lines."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench train",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=model_specs,
                      default="hawk:rg,hawk:1.4b,gated_ssm:1.4b,transformer:1.4b",
                      help="family:preset list (preset 'rg': the RecurrentGemma Hawk shape)")
  parser.add_argument("--modes", type=cli.choices_list("causal", "bidirectional"),
                      default="causal,bidirectional", help="causal and/or bidirectional")
  parser.add_argument("--scan_impls", type=cli.choices_list(*cli.SCAN_IMPLS), default="auto",
                      help="linear_scan impls for recurrent models")
  parser.add_argument("--baseline", default="",
                      help="RecurrentGemma scan types to measure, e.g. LINEAR_NATIVE")
  parser.add_argument("--batch", type=cli.positive_int, default=8)
  parser.add_argument("--seq_len", type=cli.positive_int, default=2048)
  parser.add_argument("--vocab", type=cli.positive_int, default=32_000)
  parser.add_argument("--steps", type=cli.positive_int, default=5,
                      help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--remat", type=cli.choices_list(*REMAT_CHOICES), default="none",
                      help="model.remat values to compare: none, full and/or dots (comma list)")
  parser.add_argument("--layers", type=cli.choices_list(*_LAYERS.values()), default="scan",
                      help="model.scan_layers to compare: scan (one scanned block group) and/or "
                           "loop (every block compiled on its own)")
  parser.add_argument("--loss_chunk", type=loss_chunks, default="0",
                      help="model.loss_chunk values to compare (comma list): 0 the whole batch's "
                           "logits at once, N positions of each row at a time")
  parser.add_argument("--peak_tflops", type=cli.positive_float, default=None,
                      help="dense bf16 peak for MFU (default: by card name; none on CPU)")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  layers = [{v: k for k, v in _LAYERS.items()}[name] for name in args.layers]
  card = harness.device_info()["card"]
  args.peak_tflops = args.peak_tflops or gpu_peak_tflops(card)
  settings = {"batch": args.batch, "seq_len": args.seq_len, "vocab": args.vocab,
              "dtype": "bfloat16", "peak_tflops": args.peak_tflops}
  rows = []

  def add(row: dict[str, Any]) -> None:  # appended at once: a later model may not finish
    rows.append({**row, **settings})
    harness.print_table(rows[-1:], _COLUMNS)
    harness.append_results(rows[-1:], "train", argv, args.results)

  for scan_type in filter(None, args.baseline.split(",")):
    add(measure_recurrentgemma(scan_type, args))
  for spec in args.models:
    impls = ["-"] if spec.startswith("transformer") else args.scan_impls
    for mode in args.modes:
      for impl in impls:
        for remat in args.remat:
          for scan_layers in layers:
            for loss_chunk in args.loss_chunk:
              row = measure(spec, bidirectional=mode == "bidirectional",
                            scan_impl="auto" if impl == "-" else impl, remat=remat,
                            scan_layers=scan_layers, args=args, loss_chunk=loss_chunk)
              add({**row, "scan": impl})
  print()
  harness.print_table(rows, _COLUMNS)
