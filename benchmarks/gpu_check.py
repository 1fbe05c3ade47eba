"""The first-GPU check (issue 14): TensorRT FP16 and INT8 engines of an unpruned and a pruned
ResNet-18, their latency measured trtexec-style, their agreement with ONNX Runtime, and the
CUDA kernels on the device against their host build. Run by ``benchmarks/gpu_check.sh``.

Latency, as trtexec measures it: a warm-up of ``--warmup-ms`` of back-to-back runs, then
runs for a fixed ``--duration`` seconds, each one enqueued on the context's stream and
waited for by spinning on ``cudaStreamQuery`` (trtexec's ``--useSpinWait``) rather than a
blocking synchronize; the input already on the device (trtexec's "GPU Compute Time"),
plus the end-to-end ``infer()`` with host copies. Percentiles of the per-run times.

Agreement: on the same inputs (seeded random images through the model's preprocessing; no
dataset is needed on the GPU machine), the engine's logits against ONNX Runtime CPU running
the very graph the engine was built from, and against the FP32 graph: max difference
relative to the logit scale and top-1 agreement. The models have random weights (seed 0):
what is checked is that TensorRT computes what the graph says, not ImageNet accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def spin_latency(runner, x: np.ndarray, warmup_ms: float, duration_s: float) -> dict[str, float]:
    """trtexec-style GPU compute latency of one execution context (input already on the device)."""
    from cuda.bindings import runtime as rt

    slot = runner._pool.get()
    try:
        ctx, api, stream = slot.context, runner.api, slot.stream
        name = next(iter(runner.get_input_metadata()))
        assert ctx.set_input_shape(name, x.shape)
        ptr = slot.buffer(api, name, x.nbytes)
        api.htod(ptr, np.ascontiguousarray(x), stream)
        ctx.set_tensor_address(name, ptr)
        for out, meta in runner.get_output_metadata().items():
            shape = tuple(ctx.get_tensor_shape(out))
            ctx.set_tensor_address(out, slot.buffer(api, out, int(np.prod(shape)) * np.dtype(meta.dtype).itemsize))
        api.synchronize(stream)
        handle = api.stream_handle(stream)

        def once() -> float:
            t0 = time.perf_counter()
            assert ctx.execute_async_v3(handle)
            while int(rt.cudaStreamQuery(stream)[0]) != 0:  # spin: cudaErrorNotReady until done
                pass
            return (time.perf_counter() - t0) * 1e3

        end = time.perf_counter() + warmup_ms / 1e3
        while time.perf_counter() < end:
            once()
        times, end = [], time.perf_counter() + duration_s
        while time.perf_counter() < end:
            times.append(once())
    finally:
        runner._pool.put(slot)
    t = np.array(times)
    return {"runs": int(t.size), "p50_ms": round(float(np.percentile(t, 50)), 4),
            "p90_ms": round(float(np.percentile(t, 90)), 4), "p99_ms": round(float(np.percentile(t, 99)), 4),
            "mean_ms": round(float(t.mean()), 4), "throughput": round(x.shape[0] * 1e3 / float(np.percentile(t, 50)), 1)}


def e2e_latency(runner, x: np.ndarray, runs: int = 200) -> float:
    """p50 of ``infer()`` with host-to-device and device-to-host copies (ms)."""
    for _ in range(20):
        runner.infer({"input": x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.infer({"input": x})
        t.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.percentile(t, 50)), 4)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    scale = max(float(np.abs(ref).max()), 1e-12)
    return {"max_rel_diff": round(float(np.abs(ref - got).max()) / scale, 5),
            "top1_agreement": round(100.0 * float((ref.argmax(1) == got.argmax(1)).mean()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_check")
    ap.add_argument("--warmup-ms", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--images", type=int, default=64)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import tensorrt

    from deploykit.export import precision as prec
    from deploykit.export.onnx import export_onnx, ort_session
    from deploykit import cuda
    from deploykit.runtime.trt import BuildConfig, TrtRunner, build_engine, trt_status
    from deploykit.zoo import build_model

    status = trt_status()
    if not status.ok:
        print(f"gpu_check: {status.reason}", file=sys.stderr)
        return 2
    api = cuda.cuda_api()
    major, minor = api.compute_capability(0)
    device = {"gpu": api.device_name(0), "sm": f"{major}{minor}", "tensorrt": tensorrt.__version__,
              "binding": cuda.gpu_status().binding}
    print("device:", device, flush=True)

    import torch

    torch.manual_seed(0)
    models = {"base": args.out / "r18.onnx", "pruned": args.out / "r18_pruned.onnx"}
    if not models["base"].is_file():
        export_onnx(build_model("torchvision:resnet18"), models["base"])
    if not models["pruned"].is_file():
        art = args.out / "r18_pruned"
        subprocess.run([sys.executable, "-m", "deploykit", "compress", "torchvision:resnet18", "--target-macs", "0.5",
                        "--criterion", "l2", "--finetune-epochs", "0", "--out", str(art), "--force"], check=True)
        export_onnx(build_model(str(art)), models["pruned"])

    rng = np.random.default_rng(0)
    from deploykit.export.onnx import read_sidecar
    from deploykit.zoo.base import Preprocess

    pre = Preprocess.from_dict(read_sidecar(models["base"])["preprocess"])
    images = rng.integers(0, 256, (args.images, 256, 256, 3), dtype=np.uint8)
    inputs = np.concatenate(prec.preprocessed(images, pre, 16))
    calib = prec.Calibration(images=rng.integers(0, 256, (64, 256, 256, 3), dtype=np.uint8), spec="random uint8")

    rows = []
    for variant, fp32 in models.items():
        ref32 = np.concatenate([ort_session(fp32).run(None, {"input": inputs[i:i + 16]})[0] for i in range(0, len(inputs), 16)])
        for precision in ("fp16", "int8"):
            graph = args.out / f"r18_{variant}_{precision}.onnx"
            if not graph.is_file():
                prec.convert(fp32, graph, precision, calib if precision == "int8" else None)
            engine = graph.with_suffix(".engine")
            t0 = time.perf_counter()
            build_engine(graph, engine, BuildConfig(precision=precision, timing_cache=args.out / "timing.cache",
                                                     profiles=2))
            build_s = round(time.perf_counter() - t0, 1)
            ref = np.concatenate([ort_session(graph).run(None, {"input": inputs[i:i + 16]})[0]
                                  for i in range(0, len(inputs), 16)])
            with TrtRunner(engine) as r:
                got = np.concatenate([r.infer({"input": inputs[i:i + 8]})["output"] for i in range(0, len(inputs), 8)])
                row = {"model": f"resnet18-{variant}", "precision": precision, "build_s": build_s,
                       "vs_same_graph_on_ort": agreement(ref, got), "vs_fp32_on_ort": agreement(ref32, got)}
                for b in (int(v) for v in args.batches.split(",")):
                    x = inputs[:b] if b <= len(inputs) else np.repeat(inputs[:1], b, 0)
                    row[f"b{b}"] = {**spin_latency(r, x, args.warmup_ms, args.duration), "infer_p50_ms": e2e_latency(r, x)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    from deploykit.kernels import backend, device as dk_device

    k = dk_device.kernels()
    host = backend("host")
    imgs = rng.integers(0, 256, (4, 480, 640, 3), dtype=np.uint8)
    kern = {"backend": type(k).__name__}
    if isinstance(k, dk_device.DeviceKernels):
        for label, kw in (("stretch", {}), ("letterbox", {"letterbox": True}), ("bgr_fp16", {"color": "BGR", "out_dtype": "float16"})):
            kern[f"preprocess_{label}_equal"] = bool(np.array_equal(k.preprocess(imgs, pre, **kw), host.preprocess(imgs, pre, **kw)))
        logits = rng.standard_normal((64, 1000)).astype(np.float32)
        (ds, di), (hs, hi) = k.softmax_topk(logits, 5), host.softmax_topk(logits, 5)
        kern["topk_indices_equal"] = bool(np.array_equal(di, hi))
        kern["topk_max_rel_diff"] = float(np.abs(ds - hs).max() / np.abs(hs).max())
        seg = rng.standard_normal((2, 21, 64, 64)).astype(np.float32)
        kern["argmax_equal"] = bool(np.array_equal(k.argmax_channels(seg), host.argmax_channels(seg)))
        t0 = time.perf_counter()
        for _ in range(50):
            k.preprocess(imgs, pre)
        kern["preprocess_4x480x640_ms"] = round((time.perf_counter() - t0) * 1e3 / 50, 3)

    doc = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device,
           "host": f"{platform.machine()} {platform.system()} {platform.release()}",
           "settings": {"warmup_ms": args.warmup_ms, "duration_s": args.duration, "spin_wait": True,
                        "batches": args.batches},
           "engines": rows, "kernels": kern}
    (args.out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(kern))
    bad = [r for r in rows if r["vs_same_graph_on_ort"]["top1_agreement"] < 95.0]
    bad_kernels = [key for key, v in kern.items() if key.endswith("_equal") and v is False]
    verdict = "OK" if not bad and not bad_kernels else f"DISAGREES: {[r['model'] for r in bad]} {bad_kernels}"
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'}; {verdict}")
    return 1 if bad or bad_kernels else 0


if __name__ == "__main__":
    sys.exit(main())
