"""`python -m birdie_jax.bench controller`: the cost of one controller update.

One update = the reward from the new losses, `train_steps` reward-model steps on the history and the
choice of the next mixture among 2 x `num_candidates` candidates. Sizes are the defaults: Birdie's
configuration grid (96 configurations in 7 classes; `--configs` for another count, spread over 7
classes like it) and the paper's schedule (37 evaluations in 32k steps, so 36 history rows). The
history is filled to `--fill` rows (default: full, the most expensive case) with synthetic values;
cost grows with the history window (the power of two above the rows held, at least 8) and does
not depend on the values. Prints the compile time and the
median wall and CPU seconds of `--repeats` updates, then one JSON line, also appended (with date,
command and device) to `--results`.
"""
from __future__ import annotations

import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from birdie_jax import cli
from birdie_jax.bench import harness
from birdie_jax.controller.controller import Controller
from birdie_jax.controller.settings import default_settings
from birdie_jax.objectives import grid

# The sizes of Birdie's grid (paper A.2) per class, used to spread `--configs` over 7 classes.
_CLASS_SHARES = np.array([1, 1, 16, 2, 4, 36, 36]) / 96


def class_of_config(num_configs: int) -> np.ndarray:
  """Birdie's class index per configuration, or `num_configs` spread over 7 classes like it."""
  if num_configs == 96:
    return grid.build_curriculum("birdie", seq_len=2048, num_sentinels=256).class_index
  sizes = np.maximum(1, np.round(_CLASS_SHARES * num_configs)).astype(int)
  sizes[-1] += num_configs - sizes.sum()
  return np.repeat(np.arange(7), sizes)


def measure(controller: Controller, fill: int, repeats: int) -> dict[str, Any]:
  """Compile time and median wall / CPU seconds of `repeats` updates at `fill` history rows."""
  rng = np.random.default_rng(0)
  n, capacity = controller.num_configs, controller.capacity
  fill = max(1, min(fill, capacity))
  state = controller.init()
  state = state.replace(
      losses=jnp.asarray(rng.uniform(1, 5, (capacity, n)), jnp.float32),
      actions=jnp.asarray(rng.dirichlet(np.ones(n), capacity), jnp.float32),
      rewards=jnp.asarray(rng.uniform(-1, 1, (capacity, n)), jnp.float32),
      count=jnp.int32(fill - 1), num_updates=jnp.int32(fill),
      prev_losses=jnp.asarray(rng.uniform(1, 5, n), jnp.float32))
  step = controller.schedule.control_start
  losses = rng.uniform(1, 5, n)
  start = time.perf_counter()
  jax.block_until_ready(controller.update(state, losses, step))
  compile_s = time.perf_counter() - start
  wall, cpu = [], []
  for _ in range(repeats):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(controller.update(state, losses, step))
    wall.append(time.perf_counter() - start_wall)
    cpu.append(time.process_time() - start_cpu)
  return {"configs": n, "history_rows": fill, "capacity": capacity,
          "candidates": 2 * controller.num_candidates, "train_steps": controller.train_steps,
          "compile_and_first_s": round(compile_s, 3), "update_s": round(float(np.median(wall)), 3),
          "update_cpu_s": round(float(np.median(cpu)), 3)}


def main(argv: list[str]) -> None:
  """Parses flags, measures, prints a summary line and the JSON result."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench controller",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--configs", type=cli.positive_int, default=96,
                      help="configurations (action size)")
  parser.add_argument("--total_steps", type=cli.positive_int, default=32_000,
                      help="run length (schedule)")
  parser.add_argument("--fill", type=cli.positive_int, default=1 << 30,
                      help="history rows (default: full)")
  parser.add_argument("--repeats", type=cli.positive_int, default=5, help="timed updates")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  controller = Controller.from_config(default_settings(), total_steps=args.total_steps,
                                      class_of_config=class_of_config(args.configs))
  result = measure(controller, args.fill, args.repeats)
  print(f"controller update: {result['configs']} configurations, {result['history_rows']} history "
        f"rows, {result['candidates']} candidates: {result['update_s']:.3f} s wall, "
        f"{result['update_cpu_s']:.3f} s CPU (compile + first "
        f"{result['compile_and_first_s']:.1f} s) on {jax.devices()[0].device_kind}")
  print(json.dumps({"benchmark": "controller", **result}), flush=True)
  harness.append_results([result], "controller", argv, args.results)
