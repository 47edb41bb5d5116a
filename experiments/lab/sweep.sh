#!/usr/bin/env bash
# The lab's sweep in pieces (made for lent GPUs, runs anywhere):
#     bash experiments/lab/sweep.sh MINUTES [OUT]
# Runs the stages below in order within MINUTES, each continuing the sweep (LAB_CONFIG, default
# configs/lab.py:gpu) in LAB_WORKDIR (default experiments/lab/runs/gpu; finished points are
# skipped), writes LAB_REPORT (default experiments/LAB.md) and its plots (LAB_PLOTS, default
# experiments/lab), and packs the results (points, settings, report) into OUT/lab.tgz when OUT is
# given (a lent machine keeps nothing: unpack it into the checkout and commit). Wheels for what
# the machine lacks are installed from .wheels/ when that folder exists. LAB_WORKERS (default 1)
# points train at once (lab config `workers`); LAB_WORKERS=auto takes the count recorded for this
# card in LAB_WORKDIR/workers.json, measuring it first (workers_probe.sh, ~3 min) if absent.
set -u
budget=$1
out=${2:-}
start=$(date +%s)
source experiments/device_wheels.sh
export PYTHONUNBUFFERED=1
workdir=${LAB_WORKDIR:-experiments/lab/runs/gpu}
report=${LAB_REPORT:-experiments/LAB.md}
plots=${LAB_PLOTS:-experiments/lab}
config=${LAB_CONFIG:-configs/lab.py:gpu}
if [ "${LAB_WORKERS:-1}" = auto ]; then
  mkdir -p "$workdir"
  LAB_WORKERS=$(python - "$workdir/workers.json" <<'PY'
import json, os, sys
import jax
card = jax.devices()[0].device_kind
table = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {}
print(table.get(card, {}).get("chosen", ""))
PY
)
  if [ -z "$LAB_WORKERS" ]; then
    LAB_WORKERS=$(bash experiments/lab/workers_probe.sh 4 3000 "$workdir/workers.json" | tail -1 \
      | sed 's/chosen: //')
  fi
  case $LAB_WORKERS in ''|*[!0-9]*) LAB_WORKERS=1 ;; esac  # a failed probe: one worker
  echo "lab: $LAB_WORKERS worker(s) ($workdir/workers.json)"
fi
export LAB_WORKERS

stage() {
  local left
  left=$(( budget * 60 - ($(date +%s) - start) ))
  if [ "$left" -lt 45 ]; then return; fi
  python -m birdie_jax.lab --config="$config" --workdir="$workdir" --report="$report" \
    --plots="$plots" --config.max_minutes="$(awk "BEGIN {print ($left - 25) / 60}")" \
    --config.workers="${LAB_WORKERS:-1}" "$@" 2>&1 \
    | grep -v "^WARNING\|^[IW][0-9]\{4\} "
}
# The config's tasks named in $1 (comma-separated task names, difficulties from the config).
tasks_of() {
  python -c "from configs.lab import get_config; print(','.join(i for i in get_config('${config#*:}').tasks.split(',') if i.split(':')[0] in '$1'.split(',')))"
}
# Order of priority: the sanity gate, then the issue's three Hawk targets, then the rest.
stage --config.tasks="$(tasks_of mqar)" --config.families=transformer --config.layouts=causal
stage --config.tasks="$(tasks_of disjoint_sf,disjoint_lf)" --config.families=hawk
stage --config.tasks="$(tasks_of phonebook_ql,mqar_pq)" --config.families=hawk
stage --config.tasks="$(tasks_of mqar)" --config.families=hawk
stage
python -m birdie_jax.lab --config=$config --workdir=$workdir --report_only \
  --report=$report --plots=$plots 2>&1 | tail -1
if [ -n "$out" ]; then
  tar czf "$out/lab.tgz" --exclude=partial "$workdir" "$report" "$plots"/*.png
fi
