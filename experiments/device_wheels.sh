# Sourced by the scripts a lent GPU runs (experiments/lab/sweep.sh, experiments/study/gpu_call.sh):
# the device image lacks ml_collections, sentencepiece and zstandard, so install them from the
# carried .wheels/ (cp312 builds) into /tmp/site when any is missing, and put it on PYTHONPATH.
if [ -d .wheels ] && ! python -c "import ml_collections, sentencepiece, zstandard" 2>/dev/null; then
  python -m pip install -q --no-deps --no-index --find-links .wheels --target /tmp/site \
    ml_collections sentencepiece zstandard 2>&1 | tail -1
  export PYTHONPATH=/tmp/site:$PWD
fi
