#!/usr/bin/env bash
# One lent-GPU call of the study: the next stages of one arm within MINUTES, then its small files.
#     bash experiments/study/gpu_call.sh ARM MINUTES [OUT]
# Stages, each skipped when its output exists (so the same command, called again on the same warm
# machine, continues where the last call stopped):
#   train     birdie_jax.main into workdirs/study/ARM; stopped by SIGTERM before the budget ends
#             (a checkpoint is written, exit 0) and resumed by the next call
#   evaluate  objective competence, the copying tasks, story infilling and passage QA
#             (eval/<step>.json, objectives/<step>.json)
#   heldout   Gutenberg-val and WikiText-2 perplexity (heldout.json)
#   finetune  the protocol per task, phonebook then MQAR (finetune/protocol-<task>.json)
# STUDY_STAGES (default train,evaluate,heldout,finetune) runs only the named stages: the NTP
# arms' LR candidates stop before `finetune` (NTP's number is the best LR's, and a task's
# protocol costs more device time than a pre-training: STATUS.md), the best is then run again.
# A lent machine keeps git-ignored paths (workdirs/) between calls only while warm (30 s idle), and
# checkpoints are too large to come back: OUT/ARM.tgz holds everything but them (unpack it into
# experiments/study/runs/). Needs: carry ["data/study", ".wheels"] (experiments/study/STATUS.md).
set -u
arm=$1
budget=$2
out=${3:-}
start=$(date +%s)
stages=,${STUDY_STAGES:-train,evaluate,heldout,finetune},
for s in ${stages//,/ }; do
  case $s in train|evaluate|heldout|finetune) ;;
    *) echo "study: unknown stage $s in STUDY_STAGES (train, evaluate, heldout, finetune)"; exit 2;;
  esac
done
wanted() { [[ $stages == *,$1,* ]]; }
source experiments/device_wheels.sh
export BIRDIE_STUDY_CORPUS=${BIRDIE_STUDY_CORPUS:-data/study} PYTHONUNBUFFERED=1
workdir=workdirs/study/$arm
tiny=""
case $arm in *,tiny) tiny=--tiny;; esac  # CPU smoke runs: `bash ... hawk-50m-birdie-s0,tiny 20`
config=experiments/study/config.py:$arm
quiet() { grep -v "^WARNING\|^[IW][0-9]\{4\} "; }
# Seconds left before the tarball must be written (30 s kept for it).
left() { echo $(( budget * 60 - ($(date +%s) - start) - 30 )); }

# Runs "$@" within the time left; 0 when it finished, 1 when the budget stopped it (SIGTERM first,
# so the training loop checkpoints; SIGKILL 60 s later).
within_budget() {
  local t
  t=$(left)
  if [ "$t" -lt 60 ]; then return 1; fi
  timeout -s TERM -k 60 "$t" "$@" 2>&1 | quiet
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then return 1; fi
  if [ "$rc" -ne 0 ]; then echo "study: $* exited $rc"; return 1; fi
  return 0
}

pack() {
  if [ -n "$out" ] && [ -d "$workdir" ]; then
    tar czf "$out/$arm.tgz" --exclude=checkpoints --exclude=lock.json --exclude=tensorboard \
      --exclude=tokenizer -C workdirs/study "$arm"
  fi
}
trap pack EXIT

nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
if wanted train; then
  within_budget python -m birdie_jax.main --config="$config" --workdir="$workdir" || exit 0
fi
if wanted evaluate && ! ls "$workdir/eval" 2>/dev/null | grep -qE '^[0-9]+\.json$'; then
  within_budget python -m birdie_jax.evaluate --workdir="$workdir" \
    --tasks=objectives,copying_text,copying,copying_frequent,story_infilling,passage_qa,perplexity \
    || exit 0
fi
if wanted heldout && [ ! -f "$workdir/heldout.json" ]; then
  within_budget python -m experiments.study.heldout --workdir="$workdir" || exit 0
fi
wanted finetune || { echo "study: $arm done (stages ${stages:1:-1})"; exit 0; }
for task in phonebook mqar; do
  [ -f "$workdir/finetune/protocol-$task.json" ] || within_budget python -m \
    experiments.study.finetune --workdir="$workdir" --task=$task $tiny || exit 0
done
echo "study: $arm complete"
