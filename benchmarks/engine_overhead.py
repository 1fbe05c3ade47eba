"""Overhead of deploykit.Engine over a bare ONNX Runtime session, batch 1 (CPU).

Two comparisons, each interleaved (A B A B ...) on the same inputs, ONNX Runtime on one
intra-op thread in both:

raw      ``engine(x)`` (input validation + runner) vs ``session.run(None, {"input": x})``
predict  ``engine.predict(image)`` (host-kernel preprocessing, run, softmax + top-5 kernel)
         vs the pipeline an app would write by hand: ``Preprocess.apply`` (torch),
         ``session.run``, NumPy softmax and argsort.

    .venv/bin/python benchmarks/engine_overhead.py [--runs 3000] [--model cifar:resnet20]

Writes benchmarks/results/engine_overhead.md and engine_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar:resnet20")
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "data" / "weights" / "resnet20-12fca82f.th"))
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    import torch

    from deploykit.bench.latency import interleaved, summarize
    from deploykit.engine import Engine
    from deploykit.export.onnx import export_onnx, ort_session
    from deploykit.zoo import build_model

    torch.set_num_threads(1)
    weights = args.weights if Path(args.weights).is_file() and args.model.startswith("cifar:") else None
    built = build_model(args.model, weights=weights)
    path = Path(tempfile.mkdtemp(prefix="dk-overhead-")) / "model.onnx"
    export_onnx(built, path)
    sess = ort_session(path, threads=1)
    engine = Engine(path, backend="ort", threads=1)
    pre = built.preprocess
    rng = np.random.default_rng(0)
    x = rng.standard_normal(built.input_shape).astype(np.float32)
    image = rng.integers(0, 256, (*pre.size, pre.channels), dtype=np.uint8)

    def manual_predict():
        inp = pre.apply(torch.from_numpy(image[None])).numpy()
        logits = sess.run(None, {"input": inp})[0]
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        top = np.argsort(-probs, axis=1)[:, :5]
        return top, np.take_along_axis(probs, top, 1)

    assert engine.predict(image).indices == manual_predict()[0][0].tolist()
    results = {}
    for name, fns in {
        "raw": {"onnxruntime session.run": lambda: sess.run(None, {"input": x}), "Engine(x)": lambda: engine(x)},
        "predict": {"manual pipeline": manual_predict, "Engine.predict(image)": lambda: engine.predict(image)},
    }.items():
        times = interleaved(fns, runs=args.runs, warmup=100)
        (base_name, base), (eng_name, eng) = [(n, summarize(n, 1, t)) for n, t in times.items()]
        results[name] = {"baseline": base_name, "engine": eng_name, "baseline_p50_ms": round(base.p50_ms, 4),
                         "engine_p50_ms": round(eng.p50_ms, 4), "ratio_p50": round(eng.p50_ms / base.p50_ms, 4),
                         "baseline_mean_ms": round(base.mean_ms, 4), "engine_mean_ms": round(eng.mean_ms, 4),
                         "ratio_mean": round(eng.mean_ms / base.mean_ms, 4)}
    meta = {"command": f"python benchmarks/engine_overhead.py --runs {args.runs} --model {args.model}",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, 2 cores shared, {platform.system()} {platform.release()}",
            "onnxruntime": __import__("onnxruntime").__version__, "model": args.model, "batch": 1,
            "kernels": type(engine.kernels).__name__ if not hasattr(engine.kernels, "__name__") else engine.kernels.__name__}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_overhead.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = ["# deploykit.Engine overhead over a bare ONNX Runtime session (batch 1, CPU)", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Machine: {meta['machine']}; onnxruntime {meta['onnxruntime']}; 1 intra-op thread; "
             f"{args.runs} interleaved runs each; pre/post kernels: `{meta['kernels']}`", "",
             "| comparison | baseline | p50 ms | Engine | p50 ms | p50 ratio | mean ratio |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['baseline']} | {r['baseline_p50_ms']:.4f} | {r['engine']} | {r['engine_p50_ms']:.4f} | "
                     f"{r['ratio_p50']:.3f} | {r['ratio_mean']:.3f} |")
    lines += ["", "The target is a p50 ratio of at most 1.05 for `raw`. A ratio below 1 for `predict` means the Engine's "
              "fused preprocessing kernel is cheaper than torch's resize + normalize.", ""]
    (out / "engine_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
