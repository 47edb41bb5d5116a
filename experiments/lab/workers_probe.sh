#!/usr/bin/env bash
# Does training several lab points at once (lab config `workers`, one thread each) speed a sweep
# up on this machine? Runs the same points twice from empty workdirs, with 1 worker and with N,
# prints each run's wall time and the points' summed training seconds, and last the worker count
# to use (`chosen: N` when N workers took under 0.9 of one worker's wall time, else 1):
#     bash experiments/lab/workers_probe.sh [N=4] [STEPS=3000] [RECORD.json]
# With RECORD, the measurement is added there under this machine's card name (sweep.sh's
# LAB_WORKERS=auto reads it and probes only for a card it does not hold). On a lent GPU: carry
# [".wheels"], BIRDIE_JAX_SCAN_AUTOTUNE=0; about 3 minutes at the defaults (gpu256's MQAR 16
# pairs, Transformer and Hawk at widths 64 and 256, causal: 4 points).
set -u
workers=${1:-4}
steps=${2:-3000}
record=${3:-}
source experiments/device_wheels.sh
export PYTHONUNBUFFERED=1
walls=()
for n in 1 "$workers"; do
  dir=/tmp/lab-workers-probe/w$n
  rm -rf "$dir"
  start=$(date +%s.%N)
  python -m birdie_jax.lab --config=configs/lab.py:gpu256 --workdir="$dir" --report="$dir/LAB.md" \
    --plots="$dir" --config.tasks=mqar:16 --config.families=transformer,hawk \
    --config.widths=64,256 --config.layouts=causal --config.steps="$steps" \
    --config.eval_every=500 --config.workers="$n" 2>&1 | grep "done in\|rror" >&2
  wall=$(awk "BEGIN {print $(date +%s.%N) - $start}")
  walls+=("$wall")
  python - "$dir" "$n" "$wall" >&2 <<'PY'
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
python - "$workers" "$steps" "${walls[0]}" "${walls[1]}" "$record" <<'PY'
import datetime, json, os, sys
import jax
workers, steps, one, many, record = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:5]), sys.argv[5]
chosen = workers if many < 0.9 * one else 1
if record:
  table = json.load(open(record)) if os.path.exists(record) else {}
  table[jax.devices()[0].device_kind] = {
      "chosen": chosen, "wall_s": {"1": round(one, 1), str(workers): round(many, 1)},
      "steps": steps, "date": datetime.date.today().isoformat(),
      "command": f"bash experiments/lab/workers_probe.sh {workers} {steps} {record}"}
  with open(record, "w") as f:
    json.dump(table, f, indent=1)
print(f"chosen: {chosen}")
PY
