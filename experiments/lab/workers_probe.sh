#!/usr/bin/env bash
# Does training several lab points at once (lab config `workers`, one thread each) speed a sweep
# up on this machine? Runs the same points twice from empty workdirs, with 1 worker and with N,
# and prints each run's wall time and the points' summed training seconds:
#     bash experiments/lab/workers_probe.sh [N=4] [STEPS=3000]
# On a lent GPU: carry [".wheels"], BIRDIE_JAX_SCAN_AUTOTUNE=0; about 3 minutes at the defaults
# (gpu256's MQAR 16 pairs, Transformer and Hawk at widths 64 and 256, causal: 4 points). Set
# LAB_WORKERS=N for the sweep (sweep.sh) when N workers finish in clearly less wall time.
set -u
workers=${1:-4}
steps=${2:-3000}
source experiments/device_wheels.sh
export PYTHONUNBUFFERED=1
for n in 1 "$workers"; do
  dir=/tmp/lab-workers-probe/w$n
  rm -rf "$dir"
  start=$(date +%s.%N)
  python -m birdie_jax.lab --config=configs/lab.py:gpu256 --workdir="$dir" --report="$dir/LAB.md" \
    --plots="$dir" --config.tasks=mqar:16 --config.families=transformer,hawk \
    --config.widths=64,256 --config.layouts=causal --config.steps="$steps" \
    --config.eval_every=500 --config.workers="$n" 2>&1 | grep "done in\|rror"
  wall=$(awk "BEGIN {print $(date +%s.%N) - $start}")
  python - "$dir" "$n" "$wall" <<'PY'
import glob, json, sys
import jax
folder, n, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
points = [json.load(open(p)) for p in glob.glob(f"{folder}/points/*.json")]
train = sum(p["train_seconds"] for p in points)
compile_s = sum(p["compile_seconds"] for p in points)
print(f"workers {n} on {jax.devices()[0].device_kind}: {len(points)} points in {wall:.0f} s wall "
      f"(process start included); summed per point: train {train:.0f} s, compile {compile_s:.0f} s")
PY
done
