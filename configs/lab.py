"""Mechanism-lab sweeps (`python -m birdie_jax.lab --config=configs/lab.py:<sweep>`).

    gpu   the GPU sweep of LAB.md: Zoology's MQAR (kv 64, 256 tokens, 8192 ids) for every family,
          set disjointness both orders, MQAR with the queries in the prefix and the Birdie
          phonebook with the question last, at widths 64-512; 4 LRs x 3 seeds per point. Run in
          pieces: `--config.max_minutes=9` per 10-minute call, the same command again continues.
    gpu256  the same over 256 data ids and shorter tasks (MQAR 16 pairs, disjointness 32,
          phonebook 16 entries, MQAR-pq 32 pairs), 24000 steps, 6 learning rates 1e-4 to 3e-2.
          Why 24000 (H100, 2026-12-07, fourth session): at 6000 steps (`runs/gpu256/`) the
          Transformer reached 1.000 on MQAR at widths 128-512 but at width 64 on one seed of
          three; at 24000 (`runs/gpu256-w64-24k/`) on all three (lr 3e-2; the seeds crossed 0.99
          at steps 5000, 5750 and 12500), and the Hawk points' accuracies were still rising at
          6000. Every width and task gets the same steps, as in Zoology.
          Earlier (`runs/gpu256-3k/`, `-lowlr/`, `-6k/`): at 3000 steps and 1e-3 to
          3e-2 the Transformer solved MQAR at widths 128 and 256 (1.000, lr 1e-3) but not at 512
          (0.25: the grid's lowest rate was too high; at 1e-4 it reached 1.000 on all seeds) nor
          at 64 (one seed of three; at 6000 steps, lr 2e-2, two of three). The 8192-id sweep
          (`gpu`) reached only 0.22 at 4000 steps: it needs far more steps than a session has.
    cpu   the reduced sweep for 2 CPU cores: widths 32 and 64, 32 ids, heads of 16, short tasks
          (MQAR 8 pairs, disjointness 16, phonebook 8 entries, MQAR-pq 16 pairs), Hawk and the
          Transformer, 1000 steps. `LAB_CONFIG=configs/lab.py:cpu bash experiments/lab/sweep.sh
          55` runs its priority stages (the gate, then the Hawk targets) within the hour.
          Why (CPU, 2026-12-07, 600-step probes): over 64 ids the width-32 Transformer (one head
          of 32, or two of 16) stayed at 0.19-0.23 on MQAR 8 pairs at every rate 1e-3 to 3e-2;
          over 32 ids with heads of 16 it reached 1.00 / 0.92 / 0.26 (lr 3e-3) and width 64
          1.000 on every seed (lr 1e-3), each point 4-6 minutes on a shared machine.
    toy   seconds: what the tests run.
Any key can be overridden: `--config.widths=64,128 --config.tasks=mqar:16,disjoint_lf:32`.
Workdirs swept before 2026-12-08 (`runs/cpu*`, `runs/gpu`, `runs/gpu256`, `-3k`, `-6k`, `-lowlr`,
`-w64-24k`) made every recurrent block bidirectional: continue them with
`--config.bidirectional_every=1` (a workdir refuses a change of what its points are).
"""
from birdie_jax.lab.settings import default_settings

_TARGETS = "disjoint_sf:{d},disjoint_lf:{d},mqar_pq:{kv},phonebook_ql:{book}"


def get_config(arg: str = "gpu"):
  """`arg`: gpu, cpu or toy (module docstring)."""
  c = default_settings()
  if arg == "gpu":
    c.tasks = "mqar:64," + _TARGETS.format(d=64, kv=64, book=32)
    c.families = "transformer,hawk,gated_ssm,griffin"
    c.widths = "64,128,256,512"
    c.steps = 4000
    c.eval_every = 500
  elif arg == "gpu256":
    c.tasks = "mqar:16," + _TARGETS.format(d=32, kv=32, book=16)
    c.families = "transformer,hawk,gated_ssm,griffin"
    c.widths = "64,128,256,512"
    c.data_ids = 256
    c.steps = 24000
    c.learning_rates = "1e-4,3e-4,1e-3,3e-3,1e-2,3e-2"
  elif arg == "cpu":
    c.tasks = "mqar:8,disjoint_sf:16,disjoint_lf:16,phonebook_ql:8,mqar_pq:16"
    c.families = "transformer,hawk"
    c.widths = "32,64"
    c.data_ids = 32
    c.head_width = 16
    c.learning_rates = "1e-3,3e-3,1e-2,3e-2"
    c.steps = 1000
    c.batch_size = 32
    c.train_examples = 8000
    c.val_examples = 128
    c.test_examples = 256
    c.eval_every = 100
    c.chunk_steps = 100
  elif arg == "toy":
    c.tasks = "mqar:8"
    c.families = "transformer"
    c.layouts = "causal"
    c.widths = "32"
    c.data_ids = 64
    c.learning_rates = "1e-3,1e-2"
    c.seeds = 2
    c.steps = 40
    c.batch_size = 16
    c.train_examples = 256
    c.val_examples = 32
    c.test_examples = 32
    c.eval_every = 20
    c.chunk_steps = 20
  else:
    raise ValueError(f"unknown lab sweep {arg!r}: gpu, cpu or toy")
  return c
