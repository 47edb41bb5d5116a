#!/usr/bin/env bash
# Several arms' gpu_call.sh at once on one lent GPU, each in its share of the GPU's memory.
#     bash experiments/study/gpu_pair.sh MINUTES OUT ARM [ARM ...]
# Why: one arm alone leaves the GPU idle while its host works (greedy decoding in the evaluation,
# the fine-tuning protocol's batches, compiles, checkpoints: a fine-tuning step took 0.2 s against
# 0.1 s for a pre-training step of the same shape, H200, 2026-12-07), and a session has 30 device
# minutes. Memory per arm (estimates, STATUS.md): a pair fits an H200; on an H100 a Hawk pair
# is marginal. Each arm's log is OUT/ARM.log (its last lines are printed at the end); its files
# come back as OUT/ARM.tgz, as from gpu_call.sh.
set -u
budget=$1
out=$2
shift 2
# Install the missing wheels once, before the arms start (two pip installs into one target race).
source experiments/device_wheels.sh
# Allocate on demand, each arm at most its share (JAX's default preallocates 75% per process).
export XLA_PYTHON_CLIENT_PREALLOCATE=false
XLA_PYTHON_CLIENT_MEM_FRACTION=$(python -c "print(round(0.92 / $#, 2))")
export XLA_PYTHON_CLIENT_MEM_FRACTION
for arm in "$@"; do
  bash experiments/study/gpu_call.sh "$arm" "$budget" "$out" > "$out/$arm.log" 2>&1 &
done
wait
for arm in "$@"; do
  echo "== $arm"
  tail -n 30 "$out/$arm.log"
done
