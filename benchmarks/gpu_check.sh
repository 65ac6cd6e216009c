#!/usr/bin/env bash
# GPU check of issue 7, one call of at most 8 minutes, from the repository root or anywhere:
#   1. the CPU part: the ensemble-vs-single equality tests (float64) that need no device;
#   2. the CUDA tests (pytest -m gpu): CUDA-graph ensemble == eager ensemble == single runs,
#      every model family, on CUDA;
#   3. the GPU benchmark (benchmarks/bench_train.py --device cuda).
# Without CUDA it says so after step 1 and exits 0. Record the output in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH=src
start=$SECONDS

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$PY" -c 'import torch; print("== torch", torch.__version__, "| CUDA:",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'

echo "== 1. ensemble == single runs on CPU (float64)"
timeout 150 "$PY" -m pytest tests/test_ensemble.py -q -x -k "one_ensemble_step or single_run_keys"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "== no CUDA device here: skipped 2. pytest -m gpu and 3. the GPU benchmark (exit 0)"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== 2. CUDA tests: pytest -m gpu"
timeout 180 "$PY" -m pytest -m gpu -q tests/

echo "== 3. GPU benchmark"
timeout 240 "$PY" benchmarks/bench_train.py --device cuda --repeats 3 --conv-steps 40 --mlp-widths 64 \
    --conv-k 1,4,8,16
echo "== done in $((SECONDS - start)) s"
