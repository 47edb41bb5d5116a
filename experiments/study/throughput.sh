#!/usr/bin/env bash
# Pre-training throughput of study arms on a lent GPU, before their real runs are planned:
#     bash experiments/study/throughput.sh STEPS ARM [ARM...]
# Trains each arm STEPS steps in a throwaway workdir (/tmp/study-throughput/ARM) with its real
# shapes (batch, sequence, model, data) and prints the loop's log lines (tokens/s, MFU). Needs
# carry ["data/study", ".wheels"] like gpu_call.sh.
set -u
steps=$1
shift
source experiments/device_wheels.sh
export BIRDIE_STUDY_CORPUS=${BIRDIE_STUDY_CORPUS:-data/study} PYTHONUNBUFFERED=1
for arm in "$@"; do
  echo "== $arm ($steps steps)"
  rm -rf "/tmp/study-throughput/$arm"
  mkdir -p /tmp/study-throughput
  python -m birdie_jax.main --config="experiments/study/config.py:$arm" \
    --workdir="/tmp/study-throughput/$arm" --config.train.steps="$steps" \
    --config.train.log_every=10 --config.train.eval_every=100000 2>&1 \
    | tee "/tmp/study-throughput/$arm.log" | grep -v "^WARNING\|^[IWE][0-9]\{4\} \|TPU\|Source Loc\|^learning/" | grep "step \|parameters\|trained\|rror"
done
# The last logged row's throughput per arm; MFU as bench train counts it (6 x params x tokens/s
# over the card's dense bf16 peak, 989 TFLOP/s on an H100 or H200).
python - "$@" <<'PY'
import json, re, sys
import jax
peak = 989e12 if any(c in jax.devices()[0].device_kind for c in ("H100", "H200")) else None
for arm in sys.argv[1:]:
  rows = [json.loads(l) for l in open(f"/tmp/study-throughput/{arm}/metrics.jsonl") if l.strip()]
  row = [r for r in rows if "tokens_per_s" in r][-1]
  found = re.search(r"([0-9,]+) parameters", open(f"/tmp/study-throughput/{arm}.log").read())
  params = int(found.group(1).replace(",", "")) if found else None
  mfu = f"{6 * params * row['tokens_per_s'] / peak:.1%}" if peak and params else "?"
  print(f"{arm} on {jax.devices()[0].device_kind}: step {row['step']} "
        f"{row['tokens_per_s']:,.0f} tokens/s, step {row['step_time_s'] * 1e3:.0f} ms, "
        f"{params} params, MFU {mfu}")
PY
