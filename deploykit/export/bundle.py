"""A self-contained folder that builds and benchmarks the model on a Jetson (or any
machine with TensorRT), with nothing of deploykit installed there.

``deploykit export DIR --bundle jetson OUT_DIR`` writes::

    model.onnx, model.onnx.json   the model in its final precision, with its sidecar
    reference/                    input.bin / output.bin (raw little-endian float32) and
                                  .npy copies: a batch of real (or seeded random) inputs and
                                  the outputs ONNX Runtime gives for them
    kernels/                      the CUDA pre/post-processing sources (NVRTC-compilable)
    run.sh                        build the engine with trtexec, check it against the
                                  reference, benchmark it (warm-up, duration, percentiles,
                                  CUDA graphs), record power mode, clocks and versions
    summarize.py                  (stdlib only) trtexec outputs -> results.json
    results.schema.json           the JSON Schema of results.json
    manifest.json                 what was bundled, with SHA-256 of every file

``deploykit bench --import OUT/results.json`` reads the results back into the report
format of local benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.atomic import atomic_dir
from deploykit.errors import DeployKitError
from deploykit.registry import Registry

RESULTS_SCHEMA_ID = "deploykit-bench/1"
# Max relative difference (scale-normalized) and minimum top-1 agreement accepted between
# TensorRT on the device and ONNX Runtime here. fp32 allows TF32, which TensorRT enables
# by default on Ampere and newer.
TOLERANCES = {"fp32": (2e-2, 90.0), "fp16": (5e-2, 90.0), "int8": (0.25, 80.0)}

Writer = Callable[..., dict[str, Any]]
BUNDLES: Registry[Writer] = Registry("bundle target")

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": RESULTS_SCHEMA_ID,
    "title": "deploykit benchmark results (imported with deploykit bench --import)",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "source", "model", "precision", "created", "device", "settings", "results"],
    "properties": {
        "schema": {"const": RESULTS_SCHEMA_ID},
        "source": {"type": "string"},
        "model": {"type": "string"},
        "precision": {"enum": ["fp32", "fp16", "int8"]},
        "created": {"type": "string"},
        "device": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "required": ["warmup_ms", "duration_s", "cuda_graph", "batches"],
            "properties": {
                "warmup_ms": {"type": "number"}, "duration_s": {"type": "number"},
                "cuda_graph": {"type": "boolean"}, "batches": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "reference_check": {"type": ["object", "null"]},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput"],
                "properties": {
                    "model": {"type": "string"}, "batch": {"type": "integer", "minimum": 1},
                    "p50_ms": {"type": "number"}, "p90_ms": {"type": "number"}, "p99_ms": {"type": "number"},
                    "mean_ms": {"type": "number"}, "std_ms": {"type": "number"}, "throughput": {"type": "number"},
                    "gpu_compute_p50_ms": {"type": "number"}, "runs": {"type": "integer"},
                },
            },
        },
    },
}

RUN_SH = r"""#!/usr/bin/env bash
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
"""

SUMMARIZE_PY = r'''#!/usr/bin/env python3
"""Turn trtexec's outputs in OUT/ into OUT/results.json (schema deploykit-bench/1).

Standard library only, Python 3.8 and newer: it runs on the device, where deploykit is not
installed (JetPack 5 ships Python 3.8). Written by deploykit @@VERSION@@.
"""

import argparse
import json
import math
import os
import statistics
import sys
from array import array
from datetime import datetime, timezone


def percentile(values, q):
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if not s:
        raise ValueError("no timings")
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def read_times(path):
    """Per-query latencies (ms) and GPU compute times from trtexec --exportTimes."""
    with open(path) as f:
        trace = json.load(f)
    rows = [r for r in trace if isinstance(r, dict) and "latencyMs" in r]
    if not rows:
        raise ValueError(f"{path} holds no latencyMs entries")
    return [float(r["latencyMs"]) for r in rows], [float(r.get("computeMs", r["latencyMs"])) for r in rows]


def summarize(model, batch, latencies, compute):
    p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
    return {
        "model": model, "batch": batch, "p50_ms": round(p50, 4), "p90_ms": round(p90, 4), "p99_ms": round(p99, 4),
        "mean_ms": round(statistics.fmean(latencies), 4), "std_ms": round(statistics.pstdev(latencies), 4),
        "throughput": round(batch * 1e3 / p50, 4), "gpu_compute_p50_ms": round(percentile(compute, 50), 4),
        "runs": len(latencies),
    }


def read_floats(path):
    a = array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return list(a)


def reference_check(bundle, out, manifest):
    """Compare trtexec --exportOutput with ONNX Runtime's reference outputs."""
    path = os.path.join(out, "reference_output.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        exported = json.load(f)
    name = manifest["output"]
    entry = next((e for e in exported if e.get("name") == name), None)
    if entry is None:
        return {"passed": False, "error": f"output {name} not in {path}"}
    got = [float(v) for v in entry["values"]]
    ref = read_floats(os.path.join(bundle, "reference", "output.bin"))
    if len(got) != len(ref):
        return {"passed": False, "error": f"{len(got)} values from TensorRT, {len(ref)} in the reference"}
    classes = manifest["output_shape"][-1]
    abs_diff = max(abs(a - b) for a, b in zip(got, ref))
    rel_diff = abs_diff / max(max(abs(b) for b in ref), 1e-12)
    rows = len(ref) // classes

    def top1(v, r):
        row = v[r * classes:(r + 1) * classes]
        return row.index(max(row))

    agree = 100.0 * sum(top1(got, r) == top1(ref, r) for r in range(rows)) / rows
    max_rel, min_agree = manifest["tolerance"]["max_rel_diff"], manifest["tolerance"]["top1_agreement"]
    return {"max_abs_diff": abs_diff, "max_rel_diff": rel_diff, "top1_agreement": round(agree, 3), "n": rows,
            "passed": rel_diff <= max_rel and agree >= min_agree}


def device_info(out):
    info = {}
    env = os.path.join(out, "env")
    for name in ("model", "l4t", "power_mode", "clocks", "gpu", "kernel", "tensorrt", "kernels"):
        p = os.path.join(env, name + ".txt")
        text = open(p, errors="replace").read().strip().replace("\x00", "") if os.path.isfile(p) else None
        info[name] = text or None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", required=True, help="e.g. 1,8")
    ap.add_argument("--warmup-ms", type=float, required=True)
    ap.add_argument("--duration-s", type=float, required=True)
    ap.add_argument("--cuda-graph", type=int, choices=(0, 1), required=True)
    args = ap.parse_args(argv)
    with open(os.path.join(args.bundle, "manifest.json")) as f:
        manifest = json.load(f)
    batches = [int(b) for b in args.batches.replace(",", " ").split()]
    results = []
    for b in batches:
        lat, comp = read_times(os.path.join(args.out, f"times_b{b}.json"))
        results.append(summarize(manifest["model"], b, lat, comp))
    check = reference_check(args.bundle, args.out, manifest)
    doc = {
        "schema": "@@SCHEMA@@", "source": "jetson-bundle", "model": manifest["model"],
        "precision": manifest["precision"], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(args.out),
        "settings": {"warmup_ms": args.warmup_ms, "duration_s": args.duration_s, "cuda_graph": bool(args.cuda_graph),
                     "batches": batches},
        "reference_check": check, "results": results,
    }
    tmp = os.path.join(args.out, ".results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, os.path.join(args.out, "results.json"))
    for r in results:
        print(f"batch {r['batch']}: p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  {r['throughput']} img/s")
    if check is not None:
        print(f"reference check: {'passed' if check.get('passed') else 'FAILED'} {check}")
        return 0 if check.get("passed") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

BUNDLE_README = """# deploykit bundle: @@MODEL@@ (@@PRECISION@@)

Copy this folder to the device (a Jetson with JetPack, or any machine with TensorRT and
`trtexec`) and run:

    ./run.sh                      # build, check against reference/, benchmark batches @@BATCHES@@
    ./run.sh --dry-run            # print the commands only
    ./run.sh --duration 30 --batches "1 4 8"

It writes `out/model.engine`, `out/timing.cache`, trtexec logs and `out/results.json`; bring
`results.json` back and read it with `deploykit bench --import results.json`. For stable
numbers set the power mode and lock clocks first (`sudo nvpmodel -m 0`,
`sudo jetson_clocks`); the script records both but changes neither.

The engine is built on the device because TensorRT engines are specific to the GPU and the
TensorRT version. `kernels/` holds deploykit's CUDA pre/post-processing sources; `run.sh`
compiles them with the device's own nvcc for its own architecture (sm_72 Xavier with
JetPack 5's CUDA 11.4, sm_87 Orin) into `out/kernels/`, and records the result
(`--no-kernels` skips it; set `NVCC` or `CUDA_ARCH` when they are not found). `run.sh`
needs bash and trtexec; `summarize.py` needs Python 3.8 or newer and nothing else.
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fill(text: str, values: dict[str, Any]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    if "@@" in text.replace('"@@SCHEMA@@"', ""):
        raise AssertionError("unfilled placeholder in a bundle template")
    return text


@BUNDLES.register("jetson")
def write_jetson_bundle(onnx_path: str | Path, out_dir: str | Path, reference_inputs: np.ndarray,
                        max_batch: int = 8, batches: tuple[int, ...] = (1, 8), workspace_mib: int = 1024,
                        force: bool = False) -> dict[str, Any]:
    """Write the bundle for ``onnx_path`` (final precision, with its sidecar) to ``out_dir``.

    Args:
        reference_inputs: a preprocessed NCHW float32 batch (real images where possible);
            ONNX Runtime's outputs for it become the reference the device must match.
        max_batch: the largest batch of the engine's optimization profile.
        batches: batch sizes the script benchmarks by default.
        force: replace a non-empty ``out_dir`` (only once the new bundle is complete).

    Returns:
        The manifest (also written as ``manifest.json``).
    """
    from deploykit import __version__
    from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, ort_session, read_sidecar
    from deploykit.runtime.kernels import sources

    onnx_path = Path(onnx_path)
    side = read_sidecar(onnx_path)
    precision = side.get("precision", "fp32")
    x = np.ascontiguousarray(reference_inputs, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(side["input_shape"][1:]):
        raise DeployKitError(f"reference inputs of shape {x.shape} do not fit the model input {side['input_shape']}")
    if not 1 <= len(x) <= max_batch or any(not 1 <= b <= max_batch for b in batches):
        raise DeployKitError(f"reference batch {len(x)} and benchmark batches {batches} must lie in 1..{max_batch}")
    y = ort_session(onnx_path).run(None, {INPUT_NAME: x})[0].astype(np.float32)
    max_rel, min_agree = TOLERANCES[precision]
    kernel_files = sources.source_files()
    values = {
        "VERSION": __version__, "PRECISION": precision, "INPUT": INPUT_NAME,
        "SHAPE_TAIL": "x".join(str(d) for d in x.shape[1:]), "REF_BATCH": len(x), "MAX_BATCH": max_batch,
        "WORKSPACE_MIB": workspace_mib, "BATCHES": " ".join(map(str, batches)), "SCHEMA": RESULTS_SCHEMA_ID,
        "MODEL": side.get("source", onnx_path.name),
    }
    with atomic_dir(out_dir, force=force) as tmp:
        shutil.copyfile(onnx_path, tmp / "model.onnx")
        (tmp / "model.onnx.json").write_text(json.dumps(side, indent=2) + "\n")
        ref = tmp / "reference"
        ref.mkdir()
        # Raw little-endian float32: what trtexec --loadInputs reads and summarize.py parses.
        x.astype("<f4").tofile(ref / "input.bin")
        y.astype("<f4").tofile(ref / "output.bin")
        np.save(ref / "input.npy", x)
        np.save(ref / "output.npy", y)
        kdir = tmp / "kernels"
        root = sources.kernels_dir()
        for f in kernel_files:
            dest = kdir / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        (tmp / "run.sh").write_text(_fill(RUN_SH, values))
        (tmp / "run.sh").chmod(0o755)
        (tmp / "summarize.py").write_text(_fill(SUMMARIZE_PY, values))
        (tmp / "results.schema.json").write_text(json.dumps(RESULTS_SCHEMA, indent=2) + "\n")
        (tmp / "README.md").write_text(_fill(BUNDLE_README, values))
        manifest = {
            "bundle": "jetson", "deploykit": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": side.get("source", onnx_path.name), "precision": precision,
            "input": INPUT_NAME, "output": OUTPUT_NAME, "input_shape": [len(x), *x.shape[1:]], "output_shape": list(y.shape),
            "max_batch": max_batch, "batches": list(batches),
            "tolerance": {"max_rel_diff": max_rel, "top1_agreement": min_agree},
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_bundle(target: str, onnx_path: str | Path, out_dir: str | Path, reference_inputs: np.ndarray,
                 **kwargs: Any) -> dict[str, Any]:
    """Write a bundle for ``target`` (see :data:`BUNDLES`)."""
    return BUNDLES.get(target)(onnx_path, out_dir, reference_inputs, **kwargs)
