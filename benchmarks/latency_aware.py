"""Pruning to a measured latency: does ``--target-latency 0.5`` deliver half the latency?

Part 1 (zoo): each model is compressed with ``--target-latency 0.5 --normalize latency
--round-to auto`` (group L2 norm, random weights: this part measures speed, not accuracy).
The latency table is the cached one for ONNX Runtime CPU, batch 1, one thread (measured
first when absent, as ``deploykit compress`` does). Base and pruned ONNX files then run
interleaved in ONNX Runtime; reported: measured p50 latency ratio (goal ≤ 0.525), the
ratio the table predicted, and the MACs ratio.

Part 1's compress runs time their result against the base (``--latency-checks``, default 3
rounds) and prune further on a miss; the table shows those timings too.

Part 2 (CIFAR): the pretrained ResNet (``--cifar-model``, ResNet-56 by default) is pruned with
Fisher under memory, flops and latency normalization to the same latency target
(``--cifar-target``, 0.7 of the base: at batch 1 the fixed per-layer costs of a CIFAR ResNet
make half the latency cost three quarters of its MACs), met by timing as in part 1 (the
progressive schedule times the model on the way and re-aims), with one identical budget (``--budget`` epochs of the 50k JPEG75 training
set, progressive removal within the first half, KD from the unpruned model, batch 64,
SGD lr 0.01 cosine). Reported: top-1 on the lossless 1k and JPEG75 10k test sets, the
measured latency ratio (the three pruned models and the base interleaved), MACs ratio.

    .venv/bin/python benchmarks/latency_aware.py [--models resnet18,mobilenet_v2]
        [--cifar-model resnet56] [--budget 0.1] [--runs 60]

Writes benchmarks/results/latency_aware.md and .json. Reruns reuse finished rows from ``--work``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import deploykit  # noqa: E402
from deploykit.bench.latency import bench_onnx  # noqa: E402
from deploykit.bench.machine import load_average, machine  # noqa: E402
from deploykit.export.onnx import export_onnx  # noqa: E402
from deploykit.zoo import build_model  # noqa: E402

ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_large",
       "mnasnet1_0", "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "inception_v3", "squeezenet1_1",
       "shufflenet_v2_x1_0", "convnext_tiny"]  # the classifiers of the coupled-channels issue
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
TARGET = 0.5


def cached(path: Path, make) -> dict:
    """``make()``'s result, stored as JSON at ``path`` and reused on the next run."""
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return result


def interleaved_p50(paths: dict[str, Path], runs: int, threads: int) -> dict[str, float]:
    """p50 milliseconds of every ONNX file, all timed in the same interleaved rounds."""
    res = bench_onnx(list(paths.values()), [1], runs=runs, warmup=10, threads=threads)
    by_path = {r.model: r.p50_ms for r in res}
    return {name: by_path[str(p)] for name, p in paths.items()}


def zoo_row(name: str, args: argparse.Namespace) -> dict:
    """Compress one zoo model to half its predicted latency, then measure both."""
    spec = f"torchvision:{name}"
    out = args.work / f"zoo-{name}"
    t0 = time.perf_counter()
    report = deploykit.compress(model=spec, out=str(out), target_latency=TARGET, criterion="l2", normalize="latency",
                                round_to="auto", force=True)
    seconds = time.perf_counter() - t0
    paths = {"base": args.work / f"zoo-{name}-base.onnx", "pruned": args.work / f"zoo-{name}-pruned.onnx"}
    export_onnx(build_model(spec, pretrained=False), paths["base"])
    export_onnx(deploykit.load(str(out)), paths["pruned"])
    p50 = interleaved_p50(paths, args.runs, args.threads)
    return {"model": spec, "p50_ms": p50, "latency_ratio": p50["pruned"] / p50["base"],
            "predicted_ratio": report["latency"]["predicted_ratio"], "macs_ratio": report["ratios"]["macs"],
            "params_ratio": report["ratios"]["params"], "checks": report["latency"]["checks"],
            "compress_seconds": round(seconds, 1),
            "load_average": load_average()}


def cifar_rows(args: argparse.Namespace) -> dict:
    """Fisher under three normalizations to the same predicted latency, one budget; then timed together."""
    model = args.cifar_model
    root = args.data / "cifar10"
    train, jpeg, lossless = f"cifar10:{root}:jpeg75", f"cifar10:{root}:test:jpeg75", f"cifar10:{root}:test:lossless"
    rows = {}
    for norm in ("memory", "flops", "latency"):
        out = args.work / f"cifar-{model}-{norm}"

        def run(norm: str = norm, out: Path = out) -> dict:
            t0 = time.perf_counter()
            rep = deploykit.compress(
                model=f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]), out=str(out), force=True,
                target_latency=args.cifar_target, criterion="fisher", normalize=norm, schedule="progressive", interval=2,
                prune_within=0.5, round_to=1, data=train, eval_data=[lossless, jpeg], calib_batches=8, batch_size=64,
                finetune_epochs=args.budget, lr=0.01, kd=True, evaluate_base=False, seed=0)
            export_onnx(deploykit.load(str(out)), out.with_suffix(".onnx"))
            return {"normalize": norm, "top1": {k: v["final"] for k, v in rep["eval"].items()},
                    "predicted_ratio": rep["latency"]["predicted_ratio"], "macs_ratio": rep["ratios"]["macs"],
                    "params_ratio": rep["ratios"]["params"], "memory_ratio": rep["ratios"]["activation_bytes"],
                    "checks": rep["latency"]["checks"],
                    "seconds": round(time.perf_counter() - t0, 1)}

        rows[norm] = cached(args.work / f"cifar-{model}-{norm}.json", run)
    base = build_model(f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]))
    base_onnx = args.work / f"cifar-{model}-base.onnx"
    export_onnx(base, base_onnx)
    paths = {"base": base_onnx, **{n: args.work / f"cifar-{model}-{n}.onnx" for n in rows}}
    p50 = interleaved_p50(paths, args.runs * 5, args.threads)  # small models: more rounds for the same time
    for n, r in rows.items():
        r["latency_ratio"] = p50[n] / p50["base"]
    return {"model": f"cifar:{model}", "p50_ms": p50, "rows": list(rows.values()),
            "eval_sets": {"lossless_1k": lossless, "jpeg75_10k": jpeg}}


def _timings(row: dict) -> str:
    """The measured ratios of compress's own timings, in order (``p``: taken on the way, while pruning)."""
    return " → ".join(f"{c['measured']:.3f}" + ("p" if c.get("why") == "progress" else "") for c in row.get("checks", []))


def markdown(zoo: list[dict], cifar: dict | None, args: argparse.Namespace, wall: float) -> str:
    m = machine()
    lines = [
        "# Pruning to a latency target: measured against predicted (ONNX Runtime CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/latency_aware.py {' '.join(sys.argv[1:])}` (wall time {wall / 60:.1f} min)",
        "",
        f"Machine: {m['cpu']} ({m['cpus']} cpus), shared with other jobs; onnxruntime {m['onnxruntime']}, "
        f"torch {m['torch']}; {datetime.date.today().isoformat()}. Batch 1, {args.threads} intra-op thread(s); "
        f"base and pruned ONNX files timed in the same interleaved rounds ({args.runs} per model), p50.",
        "",
        "## Zoo at `--target-latency 0.5 --normalize latency --round-to auto` (group L2, random weights)",
        "",
        "| model | measured latency ratio | predicted ratio | compress's own timings | MACs ratio | params ratio "
        "| base p50 ms | pruned p50 ms | compress s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in zoo:
        if "error" in r:
            lines.append(f"| {r['model']} | fails: {r['error']} | | | | | | | |")
            continue
        ok = "" if r["latency_ratio"] <= 0.525 else " (above 0.525)"
        lines.append(f"| {r['model']} | **{r['latency_ratio']:.3f}**{ok} | {r['predicted_ratio']:.3f} | {_timings(r)} | "
                     f"{r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | {r['p50_ms']['base']:.2f} | "
                     f"{r['p50_ms']['pruned']:.2f} | {r['compress_seconds']:.0f} |")
    if cifar is not None:
        lines += [
            "",
            f"## {cifar['model']}: Fisher, three normalizations, the same latency target ({args.cifar_target}) and budget",
            "",
            f"Budget: {args.budget} epoch of the JPEG75 train set (batch 64, SGD lr 0.01 cosine, KD α 0.5 T 4), "
            "progressive removal every 2 iterations within the first half, widths free.",
            "",
            "| normalize | top-1 lossless 1k | top-1 JPEG75 10k | measured latency ratio | compress's own timings "
            "| predicted ratio | MACs ratio | memory ratio | s |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        ev = cifar["eval_sets"]
        for r in cifar["rows"]:
            lines.append(f"| {r['normalize']} | {r['top1'][ev['lossless_1k']]:.2f} | {r['top1'][ev['jpeg75_10k']]:.2f} | "
                         f"{r['latency_ratio']:.3f} | {_timings(r)} | {r['predicted_ratio']:.3f} | {r['macs_ratio']:.3f} | "
                         f"{r['memory_ratio']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO), help="torchvision zoo names; empty for none")
    ap.add_argument("--cifar-model", default="resnet56", help="cifar ResNet for part 2; empty to skip")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--budget", type=float, default=0.1, help="fine-tuning epochs for part 2")
    ap.add_argument("--cifar-target", type=float, default=0.7,
                    help="predicted latency ratio for part 2 (at batch 1 a CIFAR ResNet's fixed costs make 0.5 cost most MACs)")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dk-latency-aware"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency_aware.md")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    zoo: list[dict] = []
    cifar = None

    def write() -> None:
        args.out.write_text(markdown(zoo, cifar, args, time.perf_counter() - t0))
        args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                                             "zoo": zoo, "cifar": cifar}, indent=1))

    for name in filter(None, args.models.split(",")):
        try:
            zoo.append(cached(args.work / f"zoo-{name}.json", lambda name=name: zoo_row(name, args)))
        except Exception as e:  # noqa: BLE001 - a failure is a row of the table, not the end of the run
            zoo.append({"model": f"torchvision:{name}", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"})
        write()
    if args.cifar_model:
        cifar = cifar_rows(args)
        write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
