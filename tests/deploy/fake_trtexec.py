"""A stand-in for trtexec (no GPU) that behaves like the version in $FAKE_TRTEXEC_VERSION
(default 10.3.0): it refuses the flags that version lacks, builds an "engine" that names
its ONNX file, runs it with ONNX Runtime for --loadInputs/--exportOutput, and writes an
--exportTimes trace. Every invocation is appended to $FAKE_TRTEXEC_LOG.

Faithful to trtexec's sources (github.com/NVIDIA/TensorRT, release/8.5, 8.6, 10.3, 11.0):

* The banner "&&&& RUNNING TensorRT.trtexec [TensorRT vNNNN]" carries NV_TENSORRT_VERSION:
  ``major*1000 + minor*100 + patch`` on 8.x (NvInferRuntimeBase.h 8.6), ``major*10000 +
  minor*100 + patch`` from 10 (``NV_TENSORRT_VERSION_INT``); samples/common/logging.h.
  $FAKE_TRTEXEC_VERSION=garbled prints a banner without it.
* Options per version, read from samples/common/sampleOptions.cpp: ``--stronglyTyped``
  exists from 9.0 (absent in 8.5/8.6), ``--fp16`` is gone in 11.0 (``--int8`` stays), and
  ``--skipInference`` is absent in 8.5. An option the version lacks ends the run: trtexec.cpp
  logs "Unknown option: ..." and returns ``reportFail`` (exit 1, "&&&& FAILED").
* 10.3 accepts ``--stronglyTyped`` with ``--fp16``/``--int8`` but disables the latter with a
  warning ("setting fp16 mode is not allowed if graph is strongly typed"); 11.0 takes
  ``--stronglyTyped`` as a no-op ("[Deprecated] Strongly typed network is now enabled by default").
* --exportTimes writes a JSON array with one object per timed query (no header row):
  startEnqMs ... h2dMs, computeMs, d2hMs, latencyMs (sampleReporting.cpp ``exportJSONTrace``);
  --exportOutput writes ``[{"name", "dimensions": "4x10", "values": [...]}]``
  (``exportJSONOutput``).
"""

import json
import os
import sys

import numpy as np

COMMON = {"--onnx", "--saveEngine", "--loadEngine", "--timingCacheFile", "--memPoolSize", "--minShapes", "--optShapes",
          "--maxShapes", "--shapes", "--iterations", "--warmUp", "--duration", "--useSpinWait", "--useCudaGraph",
          "--exportTimes", "--exportOutput", "--loadInputs", "--int8", "--noTF32", "--help", "--separateProfileRun"}


def options(major, minor):
    known = set(COMMON)
    if major >= 9:
        known.add("--stronglyTyped")
    if major < 11:
        known.add("--fp16")
    if (major, minor) >= (8, 6):
        known.add("--skipInference")
    return known


args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
version = os.environ.get("FAKE_TRTEXEC_VERSION", "10.3.0")
if version == "garbled":
    print("&&&& RUNNING TensorRT.trtexec # trtexec --help")
    sys.exit(0)
major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
code = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec {' '.join(args)}")
if "--help" in args:
    sys.exit(0)
unknown = [a for a in args if a.split("=", 1)[0] not in options(major, minor)]
if unknown:
    for a in unknown:
        print(f"[E] Unknown option: {a.split('=', 1)[0]} {a.split('=', 1)[1] if '=' in a else ''}", file=sys.stderr)
    print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{code}]")
    sys.exit(1)
if major in (9, 10) and "--stronglyTyped" in args and ("--fp16" in args or "--int8" in args):
    print("[W] Invalid usage, setting fp16 mode is not allowed if graph is strongly typed. Disabling BuilderFlag::kFP16.")
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if "onnx" in opts:
    with open(opts["saveEngine"], "w") as f:
        f.write(opts["onnx"])
    with open(opts["timingCacheFile"], "wb") as f:
        f.write(b"cache")
    sys.exit(0)
onnx_path = open(opts["loadEngine"]).read()
name, dims = opts["shapes"].split(":")
shape = tuple(int(d) for d in dims.split("x"))
if "loadInputs" in opts:
    import onnxruntime as ort

    x = np.fromfile(opts["loadInputs"].split(":", 1)[1], dtype="<f4").reshape(shape)
    y = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    # FAKE_TRTEXEC_PERTURB: noise as a fraction of the largest logit (a broken engine).
    perturb = float(os.environ.get("FAKE_TRTEXEC_PERTURB", "0"))
    y = y + perturb * np.abs(y).max() * np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    with open(opts["exportOutput"], "w") as f:
        json.dump([{"name": "output", "dimensions": "x".join(map(str, y.shape)), "values": y.ravel().tolist()}], f)
if "exportTimes" in opts:
    rng = np.random.default_rng(shape[0])
    rows = []
    for i, d in enumerate(rng.exponential(0.05, 200)):
        start, compute = i * 1.0, 0.4 * shape[0]
        rows.append({"startEnqMs": start, "endEnqMs": start + 0.01, "startH2dMs": start, "endH2dMs": start + 0.02,
                     "startComputeMs": start + 0.02, "endComputeMs": start + 0.02 + compute,
                     "startD2hMs": start + 0.02 + compute, "endD2hMs": start + 0.5 * shape[0] + float(d),
                     "h2dMs": 0.02, "computeMs": compute, "d2hMs": 0.01, "latencyMs": 0.5 * shape[0] + float(d)})
    with open(opts["exportTimes"], "w") as f:
        json.dump(rows, f)
