#!/usr/bin/env bash
# Pre-training throughput of study arms on a lent GPU, before their real runs are planned:
#     bash experiments/study/throughput.sh STEPS ARM [ARM...]
# Trains each arm STEPS steps (60 is plenty) in a throwaway workdir (/tmp/study-throughput/ARM)
# with its real shapes (batch, sequence, model, data) and the controller's evaluation steps of
# the arm's real run, and prints the median tokens/s and MFU over the logged windows of the
# second half. Needs carry ["data/study", ".wheels"] like gpu_call.sh.
# Why (2026-12-08): the first measurement (20 steps, H200) took one window's rate, and the
# controller's schedule, scaled to a 20-step run, evaluated at every step: each evaluation
# restarts the window (its time is not training time), so hawk-50m-birdie's 188k tokens/s was
# one step timed alone, host work not overlapped, not the run's rate.
set -u
steps=$1
shift
source experiments/device_wheels.sh
export BIRDIE_STUDY_CORPUS=${BIRDIE_STUDY_CORPUS:-data/study} PYTHONUNBUFFERED=1
for arm in "$@"; do
  echo "== $arm ($steps steps)"
  rm -rf "/tmp/study-throughput/$arm"
  mkdir -p /tmp/study-throughput
  scale=$(python -c "from experiments.study.config import get_config; from birdie_jax.controller.schedule import resolve_scale; print(resolve_scale(0, get_config('$arm').train.steps))")
  python -m birdie_jax.main --config="experiments/study/config.py:$arm" \
    --workdir="/tmp/study-throughput/$arm" --config.train.steps="$steps" \
    --config.controller.schedule_scale="$scale" \
    --config.train.log_every=5 --config.train.eval_every=100000 2>&1 \
    | tee "/tmp/study-throughput/$arm.log" | grep -v "^WARNING\|^[IWE][0-9]\{4\} \|TPU\|Source Loc\|^learning/" | grep "step \|parameters\|trained\|rror"
done
# Per arm, the median over the logged windows of the second half (the first holds the compile);
# MFU as bench train counts it (6 x params x tokens/s over the card's dense bf16 peak, 989
# TFLOP/s on an H100 or H200).
python - "$steps" "$@" <<'PY'
import json, re, statistics, sys
import jax
steps, arms = int(sys.argv[1]), sys.argv[2:]
peak = 989e12 if any(c in jax.devices()[0].device_kind for c in ("H100", "H200")) else None
for arm in arms:
  rows = [json.loads(l) for l in open(f"/tmp/study-throughput/{arm}/metrics.jsonl") if l.strip()]
  rows = [r for r in rows if "tokens_per_s" in r and r["step"] > steps // 2]
  rate = statistics.median(r["tokens_per_s"] for r in rows)
  step_ms = statistics.median(r["step_time_s"] for r in rows) * 1e3
  found = re.search(r"([0-9,]+) parameters", open(f"/tmp/study-throughput/{arm}.log").read())
  params = int(found.group(1).replace(",", "")) if found else None
  mfu = f"{6 * params * rate / peak:.1%}" if peak and params else "?"
  print(f"{arm} on {jax.devices()[0].device_kind}: median of {len(rows)} windows after step "
        f"{steps // 2}: {rate:,.0f} tokens/s, {step_ms:.0f} ms per step, "
        f"{params} params, MFU {mfu}")
PY
