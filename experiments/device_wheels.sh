# Sourced by the scripts a lent GPU runs (experiments/lab/sweep.sh, experiments/study/*.sh): the
# device image has JAX, Flax, Optax and Orbax but lacks ml_collections, sentencepiece, zstandard
# grain (with grain's array_record, cloudpickle and portpicker: the study's training loop
# failed on `import grain` there, 2026-12-07) and tensorboardX (the training loop's metrics
# writer; failed there next, same day; with protobuf should the image lack it), so install the
# missing ones from the carried .wheels/ (cp312 builds; experiments/study/STATUS.md has the
# download command) into /tmp/site and put that on PYTHONPATH.
if [ -d .wheels ]; then
  _missing=$(python - <<'PY'
import importlib.util
wanted = {"ml_collections": "ml_collections", "sentencepiece": "sentencepiece",
          "zstandard": "zstandard", "grain": "grain", "array_record": "array-record",
          "cloudpickle": "cloudpickle", "portpicker": "portpicker",
          "tensorboardX": "tensorboardX", "google.protobuf": "protobuf"}
def missing(module):
  try:
    return importlib.util.find_spec(module) is None
  except ModuleNotFoundError:  # a dotted name whose parent package is absent
    return True
print(" ".join(dist for module, dist in wanted.items() if missing(module)))
PY
)
  if [ -n "$_missing" ]; then
    # shellcheck disable=SC2086
    python -m pip install -q --no-deps --no-index --find-links .wheels --target /tmp/site \
      $_missing 2>&1 | tail -1
    export PYTHONPATH=/tmp/site:$PWD
  fi
fi
