#!/usr/bin/env bash
# GPU check, one call of about 8 minutes, from the repository root or anywhere:
#   1. the CUDA tests (pytest -m gpu): CUDA-graph pack == eager pack == single runs for every
#      model family; no training step of a pack or of a single run waits for the device;
#   2. the GPU benchmark (benchmarks/bench_train.py --device cuda);
#   3. a single run through the one engine against the older single-run engine, on CUDA
#      (benchmarks/bench_k1.py; OLD_SRC names the older src/, else it is checked out from git);
#   4. if time is left: a 16-run ConvNet sweep on `--executor local --gpus <every GPU>` with
#      packs and without (wall time of each; the CUDA executor tests are in step 1).
# Without CUDA it says so and exits 0. Record the output in BENCHMARKS.md.
# A machine without the mnist1d package can bring its wheel in .whl/ (installed to /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=src:/tmp/site
fi
start=$SECONDS

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$PY" -c 'import torch; print("== torch", torch.__version__, "| CUDA:",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "== no CUDA device here: nothing to check (exit 0)"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== 1. CUDA tests: pytest -m gpu (warnings reported, not errors: another torch here)"
timeout 200 "$PY" -m pytest -m gpu -q -p no:cacheprovider -W default tests/ || echo "== 1 FAILED"

echo "== 2. GPU benchmark"
timeout 200 "$PY" benchmarks/bench_train.py --device cuda --repeats 3 --conv-steps 40 \
    --mlp-widths 64 --conv-k 1,4,8,16 --no-memory || echo "== 2 FAILED"

echo "== 3. one engine K=1 vs the older single-run engine, CUDA"
old=()
[ -n "${OLD_SRC:-}" ] && old=(--old-src "$OLD_SRC")
timeout 240 "$PY" benchmarks/bench_k1.py --device cuda --repeats 3 "${old[@]}" || echo "== 3 FAILED"

echo "== 4. a 16-run sweep on the local executor, one worker per GPU: packs vs none"
if [ $((SECONDS - start)) -lt 420 ]; then
    gpus=$("$PY" -c 'import torch; print(",".join(map(str, range(torch.cuda.device_count()))))')
    work=$(mktemp -d)
    for pack in auto 1; do
        t0=$SECONDS
        timeout 75 "$PY" -m spherelab.cli sweep --model convnet_si \
            --dataset synthetic:3x32x32:2048:512:10 --elrs logspace:1e-3:1e-1:16 --epochs 2 \
            --executor local --gpus "$gpus" --pack "$pack" --out "$work/pack_$pack" --no-report \
            >/dev/null || echo "== 4 FAILED (pack $pack)"
        echo "== 4. --gpus $gpus --pack $pack: $((SECONDS - t0)) s for 16 runs of 2 epochs"
    done
    rm -rf "$work"
else
    echo "== 4 skipped: not enough time left in this call"
fi
echo "== done in $((SECONDS - start)) s"
