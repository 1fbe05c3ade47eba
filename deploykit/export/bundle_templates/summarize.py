#!/usr/bin/env python3
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
        text = None
        if os.path.isfile(p):
            with open(p, errors="replace") as f:
                text = f.read().strip().replace("\x00", "")
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
