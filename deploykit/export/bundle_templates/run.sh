#!/usr/bin/env bash
# Build the TensorRT engine for this bundle on the device and benchmark it.
# Written by deploykit @@VERSION@@; needs bash, trtexec (JetPack: /usr/src/tensorrt/bin) and python3.
#
#   ./run.sh [--dry-run] [--duration S] [--warmup MS] [--batches "1 8"] [--no-cuda-graph] [--no-kernels] [--out DIR]
#
# --dry-run prints every command instead of running it (no GPU needed). Environment:
# TRTEXEC, TRT_VERSION (when trtexec's banner cannot be read), NVCC, CUDA_ARCH (e.g. 72).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRECISION="@@PRECISION@@"
INPUT_NAME="@@INPUT@@"
SHAPE_TAIL="@@SHAPE_TAIL@@"     # input shape without the batch, e.g. 3x32x32
REF_BATCH=@@REF_BATCH@@
MAX_BATCH=@@MAX_BATCH@@
WORKSPACE_MIB=@@WORKSPACE_MIB@@
DRY_RUN=0
DURATION_S=10
WARMUP_MS=2000
BATCHES="@@BATCHES@@"
CUDA_GRAPH=1
KERNELS=1
OUT="$HERE/out"

usage() { sed -n '2,9p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --duration) DURATION_S="$2"; shift ;;
    --warmup) WARMUP_MS="$2"; shift ;;
    --batches) BATCHES="$2"; shift ;;
    --no-cuda-graph) CUDA_GRAPH=0 ;;
    --no-kernels) KERNELS=0 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for b in $BATCHES; do
  if ! [[ "$b" =~ ^[0-9]+$ ]] || [ "$b" -lt 1 ] || [ "$b" -gt "$MAX_BATCH" ]; then
    echo "run.sh: batch $b is outside the engine's profile 1..$MAX_BATCH" >&2; exit 2
  fi
done

run() {  # echo, then run unless --dry-run
  echo "+ $*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

TRTEXEC="${TRTEXEC:-$(command -v trtexec || true)}"
if [ -z "$TRTEXEC" ] && [ -x /usr/src/tensorrt/bin/trtexec ]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec; fi
if [ -z "$TRTEXEC" ]; then
  if [ "$DRY_RUN" = 1 ]; then TRTEXEC=trtexec; else echo "run.sh: trtexec not found (set TRTEXEC=/path/to/trtexec)" >&2; exit 2; fi
fi

# Flags used exist from TensorRT 8.5 (JetPack 5.1) on; percentiles are computed by
# summarize.py from the exported per-query times, not by trtexec.
# TensorRT version: from $TRT_VERSION, else trtexec's banner "[TensorRT v100300]" (10+:
# major*10000 + minor*100 + patch) / "[TensorRT v8601]" (8.x: major*1000 + minor*100 + patch).
# The precision flags differ by version and an unknown flag fails the build, so a version
# that cannot be read is an error, never a guess.
if [ -z "${TRT_VERSION:-}" ]; then
  if [ "$DRY_RUN" = 1 ]; then
    TRT_VERSION=10.3.0; echo "run.sh: dry run: TRT_VERSION not set, showing the commands for TensorRT $TRT_VERSION" >&2
  else
    code="$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9' || true)"
    if [ -z "$code" ]; then
      echo "run.sh: cannot read the TensorRT version from '$TRTEXEC --help' (no '[TensorRT vNNNN]' banner);" \
           "set it, e.g. TRT_VERSION=8.6.2 ./run.sh" >&2
      exit 2
    elif [ "$code" -ge 10000 ]; then TRT_VERSION="$((code / 10000)).$(((code / 100) % 100)).$((code % 100))"
    else TRT_VERSION="$((code / 1000)).$(((code / 100) % 10)).$((code % 100))"; fi
  fi
fi
TRT_MAJOR="${TRT_VERSION%%.*}"
TRT_MINOR="$(echo "$TRT_VERSION" | cut -d. -f2)"
if ! [[ "$TRT_MAJOR" =~ ^[0-9]+$ && "$TRT_MINOR" =~ ^[0-9]+$ ]]; then
  echo "run.sh: TRT_VERSION=$TRT_VERSION is not a version like 8.6.2 or 10.3.0" >&2; exit 2
fi
if [ "$TRT_MAJOR" -lt 8 ] || { [ "$TRT_MAJOR" -eq 8 ] && [ "$TRT_MINOR" -lt 5 ]; }; then
  echo "run.sh: TensorRT $TRT_VERSION is older than 8.5 (JetPack 5.1), which this bundle needs" >&2; exit 2
fi

# Precision lives in the ONNX graph (casts, Q/DQ). 8.5/8.6 build weakly typed networks and
# need --fp16/--int8 to use it (they have no --stronglyTyped); 9 and 10 take --stronglyTyped
# (which refuses the precision flags); 11 is always strongly typed and has no --fp16.
PREC_FLAGS=()
if [ "$TRT_MAJOR" -lt 9 ]; then
  case "$PRECISION" in fp16) PREC_FLAGS=(--fp16) ;; int8) PREC_FLAGS=(--int8 --fp16) ;; esac
elif [ "$TRT_MAJOR" -le 10 ]; then
  PREC_FLAGS=(--stronglyTyped)
fi

if [ "$DRY_RUN" = 0 ]; then mkdir -p "$OUT/env"; echo "$TRT_VERSION" > "$OUT/env/tensorrt.txt"; fi
record() {  # record NAME CMD...: output of a device query; absent tools or failures leave no file
  local name="$1"; shift
  if [ "$DRY_RUN" = 1 ]; then echo "+ $* > $OUT/env/$name.txt"; return 0; fi
  command -v "$1" > /dev/null 2>&1 || return 0
  "$@" > "$OUT/env/$name.txt" 2> /dev/null || rm -f "$OUT/env/$name.txt"
}
record l4t cat /etc/nv_tegra_release
record model cat /proc/device-tree/model
record power_mode nvpmodel -q
record clocks jetson_clocks --show
record gpu nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit --format=csv
record kernel uname -srm

# The CUDA pre/post-processing kernels, compiled by this device's own nvcc for its own GPU
# (JetPack 5's CUDA 11.4 still targets Xavier's sm_72, which CUDA 13 dropped). Recorded in
# results.json (device.kernels); a failed compile is recorded, it does not stop the benchmark.
if [ "$KERNELS" = 1 ]; then
  NVCC="${NVCC:-$(command -v nvcc || true)}"
  if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
  ARCH="${CUDA_ARCH:-}"
  if [ -z "$ARCH" ] && [ -r /proc/device-tree/compatible ]; then
    case "$(tr '\0' ' ' < /proc/device-tree/compatible)" in
      *tegra234*) ARCH=87 ;; *tegra194*) ARCH=72 ;; *tegra186*) ARCH=62 ;; *tegra210*) ARCH=53 ;;
    esac
  fi
  if [ -z "$ARCH" ] && command -v nvidia-smi > /dev/null 2>&1; then
    ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2> /dev/null | head -n1 | tr -dc '0-9' || true)"
  fi
  if [ "$DRY_RUN" = 1 ]; then NVCC="${NVCC:-nvcc}"; ARCH="${ARCH:-XX}"; fi
  if [ -z "$NVCC" ] || [ -z "$ARCH" ]; then
    msg="not compiled: GPU architecture unknown (set CUDA_ARCH, e.g. 72)"
    if [ -z "$NVCC" ]; then msg="not compiled: no nvcc (set NVCC=/usr/local/cuda/bin/nvcc)"; fi
    echo "run.sh: kernels $msg" >&2
    if [ "$DRY_RUN" = 0 ]; then echo "$msg" > "$OUT/env/kernels.txt"; fi
  else
    if [ "$DRY_RUN" = 0 ]; then mkdir -p "$OUT/kernels"; fi
    built=()
    for src in preprocess postprocess; do
      if run "$NVCC" -cubin -arch="sm_$ARCH" --fmad=false -std=c++17 -O3 -I"$HERE/kernels/include" \
          "$HERE/kernels/$src.cu" -o "$OUT/kernels/$src.sm_$ARCH.cubin"; then built+=("$src"); fi
    done
    if [ "$DRY_RUN" = 0 ]; then
      release="$("$NVCC" --version 2> /dev/null | grep -o 'release [0-9.]*' | head -n1 || true)"
      echo "sm_$ARCH: ${built[*]:-none} compiled by ${release:-nvcc}" > "$OUT/env/kernels.txt"
    fi
  fi
fi

ENGINE="$OUT/model.engine"
run "$TRTEXEC" --onnx="$HERE/model.onnx" --saveEngine="$ENGINE" --timingCacheFile="$OUT/timing.cache" \
  --memPoolSize=workspace:"$WORKSPACE_MIB" \
  --minShapes="$INPUT_NAME:1x$SHAPE_TAIL" --optShapes="$INPUT_NAME:1x$SHAPE_TAIL" --maxShapes="$INPUT_NAME:${MAX_BATCH}x$SHAPE_TAIL" \
  "${PREC_FLAGS[@]}" --iterations=1 --warmUp=0 --duration=0

# One inference on the reference inputs; summarize.py compares it with ONNX Runtime's outputs.
run "$TRTEXEC" --loadEngine="$ENGINE" --shapes="$INPUT_NAME:${REF_BATCH}x$SHAPE_TAIL" \
  --loadInputs="$INPUT_NAME:$HERE/reference/input.bin" --exportOutput="$OUT/reference_output.json" \
  --iterations=1 --warmUp=0 --duration=0

GRAPH_FLAGS=()
if [ "$CUDA_GRAPH" = 1 ]; then GRAPH_FLAGS=(--useCudaGraph); fi
for b in $BATCHES; do
  run "$TRTEXEC" --loadEngine="$ENGINE" --shapes="$INPUT_NAME:${b}x$SHAPE_TAIL" \
    --warmUp="$WARMUP_MS" --duration="$DURATION_S" --useSpinWait "${GRAPH_FLAGS[@]}" \
    --exportTimes="$OUT/times_b$b.json"
done

run python3 "$HERE/summarize.py" --bundle "$HERE" --out "$OUT" --batches "${BATCHES// /,}" \
  --warmup-ms "$WARMUP_MS" --duration-s "$DURATION_S" --cuda-graph "$CUDA_GRAPH"
if [ "$DRY_RUN" = 0 ]; then echo "results: $OUT/results.json (deploykit bench --import $OUT/results.json)"; fi
