"""`python -m birdie_jax.bench decode`: batched generation speed against the prompt length.

For each model and prompt length, the decoding cache is laid out as `prefill` would leave it
after the prompt (its shapes from `jax.eval_shape`, contents zero: the work per step does not
depend on them), and one jitted loop of `--new_tokens` greedy `model.step` calls is timed.
Reported: per-token latency (ms per step for the whole batch) and tokens/s. Hawk's cache is a
fixed-size state, so its latency should be flat in the prompt length; the Transformer reads a
KV cache as long as prompt plus generation. Prefill is not timed.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from birdie_jax import cli
from birdie_jax.bench import harness
from birdie_jax.bench.train import model_config, model_specs
from birdie_jax.models import build_model

_COLUMNS = ("model", "layers", "prompt_len", "batch", "ms_per_token", "tokens_per_s", "cache_gb")


def _decode_loop(graphdef: nnx.GraphDef, new_tokens: int):
  """A jitted `(state, cache, tokens) -> (tokens, cache)` running `new_tokens` greedy steps.

  The cache is donated and comes back with its position unchanged, so a long KV cache is held
  once (not as input and loop copy) and every timed call does the same work.
  """

  @functools.partial(jax.jit, donate_argnums=1)
  def run(state, cache, tokens):
    model = nnx.merge(graphdef, state)

    def body(_, carry):
      tokens, cache = carry
      logits, cache = model.step(tokens, cache)
      return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

    tokens, out = jax.lax.fori_loop(0, new_tokens, body, (tokens, cache))
    return tokens, {**out, "index": cache["index"], "positions": cache["positions"]}

  return run


def measure(spec: str, prompt_len: int, args) -> dict[str, Any]:
  """Per-token latency of `spec` after a `prompt_len`-token prompt."""
  config = model_config(spec, bidirectional=False, scan_impl="auto", remat="none",
                        scan_layers=args.layers == "scan")
  model = build_model(config.model, args.vocab, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  shape = (args.batch, prompt_len)
  ones = jnp.ones(shape, jnp.int32)
  _, cache = jax.eval_shape(lambda: model.prefill(
      ones, segment_ids=ones, positions=jnp.broadcast_to(jnp.arange(prompt_len), shape),
      prefix_mask=jnp.zeros(shape, bool), cache_len=prompt_len + args.new_tokens))
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
  cache["index"] = jnp.asarray(prompt_len, jnp.int32)
  cache["positions"] = jnp.full((args.batch,), prompt_len, jnp.int32)
  cache_bytes = sum(x.nbytes for x in jax.tree.leaves(cache))
  run = _decode_loop(graphdef, args.new_tokens)
  tokens = jnp.ones((args.batch,), jnp.int32)
  held = [cache]

  def generate():
    out, held[0] = run(state, held[0], tokens)
    return out

  ms = harness.time_ms(generate, warmup=1, reps=args.reps)
  return {"model": spec, "layers": args.layers, "prompt_len": prompt_len, "batch": args.batch,
          "new_tokens": args.new_tokens, "ms_per_token": ms / args.new_tokens,
          "tokens_per_s": args.batch * args.new_tokens / (ms * 1e-3),
          "cache_gb": cache_bytes / 2**30}


def main(argv: list[str]) -> None:
  """Parses flags, measures each model and prompt length, prints and appends the results."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench decode",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=model_specs, default="hawk:1.4b,transformer:1.4b",
                      help="family:preset list")
  parser.add_argument("--prompt_lens", type=cli.positive_ints, default="1024,4096,16384,32768")
  parser.add_argument("--batch", type=cli.positive_int, default=8)
  parser.add_argument("--new_tokens", type=cli.positive_int, default=128,
                      help="steps per timed loop")
  parser.add_argument("--vocab", type=cli.positive_int, default=32_000)
  parser.add_argument("--reps", type=cli.positive_int, default=3)
  parser.add_argument("--layers", choices=("loop", "scan"), default="loop",
                      help="model.scan_layers off (loop, the default) or on (scan)")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  rows = []
  for spec in args.models:
    for prompt_len in args.prompt_lens:
      try:
        rows.append(measure(spec, prompt_len, args))
      except jax.errors.JaxRuntimeError as error:  # out of memory at long prompts
        rows.append({"model": spec, "layers": args.layers, "prompt_len": prompt_len,
                     "batch": args.batch, "error": str(error).splitlines()[0][:200]})
      harness.print_table(rows[-1:], _COLUMNS)
      harness.append_results(rows[-1:], "decode", argv, args.results)
  print()
  harness.print_table(rows, _COLUMNS)
