#!/usr/bin/env bash
# The first-GPU check, one command, under 8 minutes on one GPU (issue 14):
#   1. the GPU tests (pytest -m gpu): TensorRT conformance against PyTorch (TF32 off), the
#      GPU Engine against the CPU one, the CUDA kernels on the device against their host build;
#   2. benchmarks/gpu_check.py: TensorRT FP16 and INT8 engines of ResNet-18, unpruned and
#      pruned to half the MACs, their trtexec-style latency (warm-up, fixed duration, spin
#      wait) and agreement with ONNX Runtime, and the kernels on the device vs the host.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default build/gpu_check)
#
# Needs: the repo's .venv with deploykit[dev] and a GPU extra (pip install -e '.[dev,gpu-cu13]',
# or gpu-cu12 on a CUDA 12 driver). Writes OUT_DIR/pytest.log, gpu_check.json and summary.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-build/gpu_check}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
start=$(date +%s)
"$PY" -c "from deploykit.runtime.trt import trt_status; s = trt_status(); print('gpu:', s.reason); raise SystemExit(0 if s.ok else 2)" \
  || { echo "gpu_check: no usable GPU with TensorRT here (see above)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv > "$OUT/nvidia-smi.txt" 2>&1 || true

timeout 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/pytest.log"
tests=${PIPESTATUS[0]}
timeout 300 "$PY" benchmarks/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
bench=${PIPESTATUS[0]}

{
  echo "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  cat "$OUT/nvidia-smi.txt" 2>/dev/null
  echo "pytest -m gpu: exit $tests: $(tail -n1 "$OUT/pytest.log")"
  echo "engines and kernels: exit $bench: $(tail -n1 "$OUT/gpu_check.log")"
  echo "took $(( $(date +%s) - start )) s"
} | tee "$OUT/summary.txt"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
