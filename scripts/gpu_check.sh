#!/usr/bin/env bash
# The GPU check (see scripts/gpu_check.py), on a machine with CUDA and PyTorch installed.
#
# Prepare the data it reads on a machine that has the full data root (64 MiB travel at most):
#   python scripts/export_gpu_data.py --data-root ../shared/data --out gpu_data --cifar-tasks 3
# then, from the repository root on the GPU machine (figures in $OUT/gpu_check.json):
#   bash scripts/gpu_check.sh
# It stops itself after 9 minutes (GPU_CHECK_MINUTES), writing the JSON after every step.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
# The CPU top-k kernel, best effort (a few seconds; without a compiler the NumPy selection runs).
python3 setup.py -q build_ext --inplace >"$OUT/build_ext.log" 2>&1 \
  || echo "note: the top-k kernel was not built (see $OUT/build_ext.log)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/nvidia-smi.txt"
minutes="${GPU_CHECK_MINUTES:-9}"
timeout --signal=KILL "$(( ${minutes%.*} * 60 + 30 ))" \
  python3 scripts/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --data-root gpu_data \
  --out "$OUT" --minutes "$minutes" "$@" 2>&1 | tee "$OUT/gpu_check.log"
