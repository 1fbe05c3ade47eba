"""Does latency fall with MACs? deploykit vs Torch-Pruning across the zoo, at half the MACs.

For every model: deploykit compresses it to MACs ≤ 0.5 (group L2 norm, memory-normalized
global ranking, widths rounded to multiples of 8); Torch-Pruning 1.6.1 prunes a copy with
its defaults (``GroupMagnitudeImportance(p=2)``, a uniform per-layer ratio found by
bisection so that it reaches the same MACs). All three ONNX files (base, deploykit,
Torch-Pruning) run in ONNX Runtime on the CPU, batch 1, interleaved round-robin, and
the p50 latencies are compared as ratios measured in the same run.

Realized efficiency = (1 − latency ratio) / (1 − MACs ratio): 1.0 means latency fell
exactly as much as MACs did.

Weights are random (no ImageNet weights on this machine): this measures speed, not
accuracy. Run: ``python benchmarks/zoo_speedup.py`` (``--models resnet18,mobilenet_v2``
for a subset); it writes benchmarks/results/zoo_speedup.md and .json after every model, and
a repeated run reuses the rows finished in ``--work``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.bench.latency import bench_onnx  # noqa: E402
from deploykit.export.onnx import check_parity, export_onnx  # noqa: E402
from deploykit.graph.costs import measure  # noqa: E402
from deploykit.zoo import build_model  # noqa: E402
from deploykit.zoo.base import BuiltModel  # noqa: E402

CLASSIFIERS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_large",
    "mnasnet1_0", "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "inception_v3", "squeezenet1_1",
    "shufflenet_v2_x1_0", "convnext_tiny",
]
SPECS = [f"torchvision:{n}" for n in CLASSIFIERS] + [
    "torchvision-detection:fasterrcnn_mobilenet_v3_large_fpn",
    "torchvision-detection:retinanet_resnet50_fpn",
    "cifar:resnet20",
    "cifar:resnet56",
]


def tp_prune(built: BuiltModel, target: float) -> tuple[torch.nn.Module | None, str]:
    """Torch-Pruning's defaults at the uniform ratio that reaches ``target`` of the MACs."""
    import torch_pruning as tp

    model, x = built.traced, built.example_input()
    base = measure(model, x).macs
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]

    def prune(ratio: float) -> torch.nn.Module:
        m = copy.deepcopy(model)
        ignored = [dict(m.named_modules())[n] for n, mod in model.named_modules() if any(mod is l for l in last)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                          pruning_ratio=ratio, ignored_layers=ignored)
            pruner.step()
        m(x)  # Torch-Pruning's pruned model must still run
        return m

    lo, hi, best = 0.0, 0.95, None
    try:
        for _ in range(9):
            mid = (lo + hi) / 2
            m = prune(mid)
            if measure(m, x).macs <= target * base:
                best, hi = m, mid
            else:
                lo = mid
    except Exception as e:  # noqa: BLE001 - recorded in the table as Torch-Pruning's failure
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
    return best, "" if best is not None else "target not reached"


def run(spec: str, runs: int, threads: int, target: float, tmp: Path) -> dict:
    import deploykit

    t0 = time.perf_counter()
    base = build_model(spec, pretrained=False)
    out = tmp / spec.replace(":", "_")
    report = deploykit.compress(model=spec, out=str(out), target_macs=target, criterion="l2", normalize="memory",
                                round_to=8, force=True)
    ours = deploykit.load(str(out))
    paths = {"base": tmp / f"{out.name}-base.onnx", "deploykit": tmp / f"{out.name}-dk.onnx"}
    export_onnx(base, paths["base"])
    export_onnx(ours, paths["deploykit"])
    parity = check_parity(ours.exported, paths["deploykit"], [ours.example_input()])["max_rel_diff"]
    x = base.example_input()
    row = {"model": spec, "macs_base": report["base"]["macs"],
           "deploykit": {**report["ratios"], "parity": parity}}
    if base.task == "classification":
        tp_model, err = tp_prune(base, target)
        if tp_model is not None:
            tp_costs, base_costs = measure(tp_model, x), measure(base.traced, x)
            paths["torch-pruning"] = tmp / f"{out.name}-tp.onnx"
            export_onnx(BuiltModel(tp_model, spec, base.input_shape, base.preprocess), paths["torch-pruning"])
            row["torch-pruning"] = tp_costs.ratio(base_costs)
        else:
            row["torch-pruning"] = {"error": err}
    lat = {r.model: r.p50_ms for r in bench_onnx(list(paths.values()), [1], runs=runs, warmup=10, threads=threads)}
    p50 = {name: lat[str(p)] for name, p in paths.items()}
    row["p50_ms"] = p50
    for name in ("deploykit", "torch-pruning"):
        if name in p50:
            r = row[name]
            r["latency"] = p50[name] / p50["base"]
            r["efficiency"] = (1 - r["latency"]) / max(1 - r["macs"], 1e-9)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def fmt(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict], args: argparse.Namespace, wall: float) -> str:
    lines = [
        "# Latency follows MACs? deploykit vs Torch-Pruning at half the MACs",
        "",
        f"Command: `python benchmarks/zoo_speedup.py --runs {args.runs} --threads {args.threads}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads available, "
        f"ONNX Runtime CPU with {args.threads} intra-op thread(s), batch 1; torch {torch.__version__}.  ",
        f"Date: {datetime.date.today().isoformat()}; wall time {wall / 60:.1f} min.  ",
        "Each model's three ONNX files ran interleaved (base, deploykit, Torch-Pruning in turn), "
        f"{args.runs} timed runs each after 10 warm-up rounds; latency = p50 ratio to the base in the same run. "
        "Random weights (speed only). deploykit: group L2 norm, memory-normalized global ranking, round-to 8. "
        "Torch-Pruning 1.6.1: `BasePruner` defaults with `GroupMagnitudeImportance(p=2)`, uniform ratio bisected to "
        "reach the same MACs. Efficiency = (1 − latency ratio) / (1 − MACs ratio).",
        "",
        "| model | dk MACs | dk params | dk act. mem | dk latency | **dk efficiency** | TP MACs | TP latency | TP efficiency |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        dk, tpr = r["deploykit"], r.get("torch-pruning", {})
        tp_cells = (f"{fmt(tpr.get('macs'))} | {fmt(tpr.get('latency'))} | {fmt(tpr.get('efficiency'), 2)}"
                    if "macs" in tpr else f"fails: {tpr.get('error', 'n/a (detector)')} | – | –")
        lines.append(f"| {r['model']} | {fmt(dk['macs'])} | {fmt(dk['params'])} | {fmt(dk['activation_bytes'])} | "
                     f"{fmt(dk['latency'])} | **{fmt(dk['efficiency'], 2)}** | {tp_cells} |")
    effs = [r["deploykit"]["efficiency"] for r in rows]
    lines += ["", f"deploykit efficiency: min {min(effs):.2f}, median {sorted(effs)[len(effs) // 2]:.2f} "
              f"over {len(effs)} models (goal ≥ 0.85 on every model)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset (names or specs)")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zoo_speedup"))
    ap.add_argument("--work", default="/tmp/dk-zoo-speedup", help="finished rows, reused when the run is repeated")
    args = ap.parse_args()
    specs = SPECS
    if args.models:
        want = args.models.split(",")
        specs = [s for s in SPECS if s in want or s.split(":")[1] in want]
    rows, start = [], time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        done = work / f"{spec.replace(':', '_')}.json"  # a finished row is not measured again
        if done.is_file():
            row = json.loads(done.read_text())
        else:
            with tempfile.TemporaryDirectory(prefix="dk-zoo-") as tmp:
                row = run(spec, args.runs, args.threads, args.target, Path(tmp))
            done.write_text(json.dumps(row))
        rows.append(row)
        print(json.dumps(row), flush=True)
        wall = time.perf_counter() - start
        Path(args.out + ".json").write_text(json.dumps(rows, indent=2) + "\n")
        Path(args.out + ".md").write_text(markdown(rows, args, wall))
    print(markdown(rows, args, time.perf_counter() - start))


if __name__ == "__main__":
    main()
