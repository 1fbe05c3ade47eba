"""FP32 vs FP16 vs INT8 (precision in the ONNX graph) for CIFAR ResNet-20 on ONNX Runtime CPU.

Accuracy on the lossless 1k CIFAR-10 test images (and the JPEG75 10k set with --jpeg),
top-1 agreement and max logit difference against FP32, file size, and batch-1 / batch-32
latency with the three models interleaved (A B C A B C ...) on one thread, reported as
ratios to FP32. FP16 on a CPU is a correctness check, not a speed claim: ONNX Runtime's
CPU provider has few fp16 kernels and inserts casts around the rest.

    .venv/bin/python benchmarks/precision.py [--data ../shared/data/cifar10] [--runs 300] [--jpeg]

Writes benchmarks/results/precision.md and precision.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "data" / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--jpeg", action="store_true", help="also evaluate on the JPEG75 10k test set")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from deploykit.bench.latency import interleaved, summarize
    from deploykit.data import load_dataset
    from deploykit.evaluate import evaluate_onnx
    from deploykit.export import precision as prec
    from deploykit.export.onnx import export_onnx, ort_session, read_sidecar
    from deploykit.zoo import build_model
    from deploykit.zoo.base import Preprocess

    spec = f"cifar10:{args.data}"
    tmp = Path(tempfile.mkdtemp(prefix="dk-precision-"))
    paths = {"fp32": tmp / "r20_fp32.onnx", "fp16": tmp / "r20_fp16.onnx", "int8": tmp / "r20_int8.onnx"}
    export_onnx(build_model("cifar:resnet20", weights=args.weights), paths["fp32"])
    t0 = time.perf_counter()
    prec.convert(paths["fp32"], paths["fp16"], "fp16")
    t_fp16 = time.perf_counter() - t0
    t0 = time.perf_counter()
    prec.convert(paths["fp32"], paths["int8"], "int8", prec.calibration_from_spec(spec, args.calib_samples))
    t_int8 = time.perf_counter() - t0

    lossless = load_dataset(f"{spec}:test:lossless")
    pre = Preprocess.from_dict(read_sidecar(paths["fp32"])["preprocess"])
    inputs = prec.preprocessed(lossless.images, pre, 250)
    rows = {}
    for name, path in paths.items():
        check = prec.verify(paths["fp32"], path, inputs, lossless.labels)
        rows[name] = {"top1_lossless_1k": evaluate_onnx(str(path), lossless), "top1_agreement": check["top1_agreement"],
                      "max_abs_diff": check["max_abs_diff"], "max_rel_diff": check["max_rel_diff"],
                      "size_kb": round(path.stat().st_size / 1024, 1)}
    if args.jpeg:
        jpeg = load_dataset(f"{spec}:test:jpeg75")
        for name, path in paths.items():
            rows[name]["top1_jpeg75_10k"] = evaluate_onnx(str(path), jpeg)

    rng = np.random.default_rng(0)
    latency = {}
    for batch in (1, 32):
        sessions = {name: ort_session(p, threads=1) for name, p in paths.items()}
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        times = interleaved({n: (lambda s=s: s.run(None, {"input": x})) for n, s in sessions.items()},
                            runs=args.runs if batch == 1 else max(30, args.runs // 5), warmup=20)
        res = {n: summarize(n, batch, t) for n, t in times.items()}
        latency[batch] = {n: {"p50_ms": round(r.p50_ms, 4), "ratio_p50_vs_fp32": round(r.p50_ms / res["fp32"].p50_ms, 3)}
                          for n, r in res.items()}

    meta = {"command": "python benchmarks/precision.py " + " ".join(f"--runs {args.runs}".split()) + (" --jpeg" if args.jpeg else ""),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
            f"{platform.processor() or platform.machine()}, 2 cores shared, {platform.system()} {platform.release()}",
            "onnxruntime": __import__("onnxruntime").__version__, "calibration": f"{args.calib_samples} train images, minmax",
            "conversion_seconds": {"fp16": round(t_fp16, 2), "int8": round(t_int8, 2)}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps({"meta": meta, "accuracy": rows, "latency": latency}, indent=2) + "\n")
    jpeg_col = args.jpeg
    lines = [
        "# Precision in the graph: CIFAR ResNet-20 on ONNX Runtime (CPU)", "",
        f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: {meta['machine']}; onnxruntime {meta['onnxruntime']}  ",
        f"INT8: QDQ, symmetric int8 activations (calibration: {meta['calibration']}), symmetric per-channel int8 weights, "
        "float bias. FP16: float16 weights/activations, float32 I/O and sensitive ops.", "",
        "| precision | top-1 lossless 1k |" + (" top-1 JPEG75 10k |" if jpeg_col else "") +
        " top-1 agreement vs fp32 (1k) | max abs logit diff | size KB | p50 ratio b1 | p50 ratio b32 |",
        "| --- | ---: |" + (" ---: |" if jpeg_col else "") + " ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['top1_lossless_1k']:.2f} |" + (f" {r['top1_jpeg75_10k']:.2f} |" if jpeg_col else "") +
                     f" {r['top1_agreement']:.1f}% | {r['max_abs_diff']:.3g} | {r['size_kb']} | "
                     f"{latency[1][name]['ratio_p50_vs_fp32']:.3f} | {latency[32][name]['ratio_p50_vs_fp32']:.3f} |")
    lines += ["", f"Latency: 1 thread, interleaved, p50 of {args.runs} runs at batch 1 "
              f"(fp32 p50 {latency[1]['fp32']['p50_ms']:.3f} ms) and {max(30, args.runs // 5)} at batch 32 "
              f"(fp32 p50 {latency[32]['fp32']['p50_ms']:.3f} ms); ratios < 1 are faster than fp32. "
              "This is a shared 2-core machine: compare ratios, not absolute times.", ""]
    (out / "precision.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
