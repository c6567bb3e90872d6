#!/usr/bin/env bash
# Run every benchmark at its CPU-sized defaults, one after the other, and keep their printed figures in
# runs/benchmarks/<name>.txt. Figures on a shared machine are noisy: compare ratios measured in one run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/benchmarks}"
mkdir -p "$OUT"
for name in bench_synth bench_processing bench_prepare bench_tiles bench_losses bench_params bench_model_size \
            bench_search_step bench_train bench_predict bench_deform; do
  echo "== $name =="
  $PY "benchmarks/$name.py" 2>&1 | tee "$OUT/$name.txt"
done
