"""A stand-in for trtexec (no GPU): builds an "engine" that names its ONNX file, runs it
with ONNX Runtime for --loadInputs/--exportOutput, and writes a plausible --exportTimes
trace. Every invocation is appended to $FAKE_TRTEXEC_LOG for the tests to inspect."""

import json
import os
import sys

import numpy as np

args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if "--help" in args:
    print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help")
    sys.exit(0)
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
    rows = [{"count": 200}] + [{"startComputeMs": i * 1.0, "computeMs": 0.4 * shape[0], "latencyMs": 0.5 * shape[0] + float(d)}
                               for i, d in enumerate(rng.exponential(0.05, 200))]
    with open(opts["exportTimes"], "w") as f:
        json.dump(rows, f)
