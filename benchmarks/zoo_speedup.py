"""Does latency fall with MACs? deploykit vs Torch-Pruning across the zoo, at half the MACs.

For every model, in its own process:

* deploykit: exactly ``deploykit compress SPEC --target-macs 0.5 --criterion l2`` (the default
  normalization and round-to 8); its wall time and the process's peak memory are recorded.
* Torch-Pruning 1.6, at its best for speed: ``BasePruner`` with ``GroupMagnitudeImportance(p=2)``,
  ``round_to=8`` (its own option for kernel-friendly widths), the final classifier ignored,
  and deploykit's pruner for the CIFAR ResNets' option-A shortcut (without it Torch-Pruning
  cannot prune them); the uniform ratio is bisected until the MACs are at most the target.
  Its defaults (no ``round_to``) are a second row. Its graph-build + prune time at the final
  ratio is recorded.

All ONNX files of a model (base, deploykit, both Torch-Pruning rows) run in ONNX Runtime on
the CPU, batch 1, interleaved round-robin; latency ratios are ratios of the fastest block
medians measured in the same run (``_common.time_efficiencies``; the p50 ratios are kept too).
Realized efficiency = (1 − latency ratio) / (1 − MACs ratio). For detectors the
MACs ratio is counted over the exported graph (backbone + FPN), the graph whose latency is
measured. Medians are taken over the models every row finished.

Weights are random (no ImageNet weights here): this measures speed, not accuracy. Rows are
cached in ``--results`` under a key of the code version and every setting.

    .venv/bin/python benchmarks/zoo_speedup.py [--models resnet18,mobilenet_v2] [--runs 100]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import BLOCK, code_version, per_model_main, provenance, time_efficiencies  # noqa: E402

JOB_VERSION = 3  # 3: latency ratio from fastest blocks (p50 ratio kept beside it)
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
TP_ROWS = {"tp-rt8": 8, "tp-default": None}
VERSION = code_version(JOB_VERSION)


def tp_prune(built: Any, target: float, round_to: int | None) -> tuple[Any, float, str]:
    """Torch-Pruning at the uniform ratio reaching ``target`` of the MACs: (model, seconds at that ratio, error)."""
    import torch
    import torch_pruning as tp

    from deploykit.graph.costs import measure
    from deploykit.graph.pruners import customized_pruners

    model, x = built.traced, built.example_input()
    base = measure(model, x).macs
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]

    def prune(ratio: float) -> tuple[torch.nn.Module, float]:
        m = copy.deepcopy(model)
        ignored = [dict(m.named_modules())[n] for n, mod in model.named_modules() if any(mod is l for l in last)]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                          pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to,
                                          customized_pruners=customized_pruners())
            pruner.step()
        seconds = time.perf_counter() - t0
        m(x)  # Torch-Pruning's pruned model must still run
        return m, seconds

    lo, hi, best = 0.0, 0.95, None
    try:
        for _ in range(10):
            mid = (lo + hi) / 2
            m, s = prune(mid)
            if measure(m, x).macs <= target * base:
                best, hi = (m, s), mid
            else:
                lo = mid
    except Exception as e:  # noqa: BLE001 - recorded in the table as Torch-Pruning's failure
        return None, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
    if best is None:
        return None, 0.0, "target not reached"
    return best[0], best[1], ""


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: compress, Torch-Pruning rows, export, interleaved timing."""
    import deploykit
    from deploykit.export.onnx import check_parity, export_onnx
    from deploykit.graph.costs import measure
    from deploykit.zoo import build_model
    from deploykit.zoo.base import BuiltModel

    row: dict[str, Any] = {"model": spec}
    with tempfile.TemporaryDirectory(prefix="dk-zoo-") as tmp_:
        tmp = Path(tmp_)
        t0 = time.perf_counter()
        report = deploykit.compress(model=spec, out=str(tmp / "dk"), target_macs=target, criterion="l2")
        row["compress_s"] = round(time.perf_counter() - t0, 1)
        row["compress_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
        base, ours = build_model(spec, pretrained=False), deploykit.load(str(tmp / "dk"))
        x = base.example_input()
        exported_base = measure(base.exported, x)
        paths = {"base": tmp / "base.onnx", "deploykit": tmp / "dk.onnx"}
        export_onnx(base, paths["base"])
        export_onnx(ours, paths["deploykit"])
        parity = check_parity(ours.exported, paths["deploykit"], [ours.example_input()])["max_rel_diff"]
        # The MACs cut of the graph that is timed: for a detector its exported backbone + FPN, not the heads.
        row["deploykit"] = {**report["ratios"], "macs": measure(ours.exported, x).macs / exported_base.macs,
                            "macs_core": report["ratios"]["macs"], "parity": parity}
        for name, round_to in TP_ROWS.items():
            if base.task != "classification":
                row[name] = {"error": "not run (deploykit's detector core wrapper is its own)"}
                continue
            m, seconds, err = tp_prune(base, target, round_to)
            if m is None:
                row[name] = {"error": err}
                continue
            paths[name] = tmp / f"{name}.onnx"
            export_onnx(BuiltModel(m, spec, base.input_shape, base.preprocess), paths[name])
            row[name] = {**measure(m, x).ratio(measure(base.traced, x)), "prune_s": round(seconds, 2)}
        time_efficiencies(row, paths, runs, threads)
    return row


def fmt(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    lines = ["# Latency follows MACs? deploykit vs Torch-Pruning at half the MACs", "",
             *provenance(f"python benchmarks/zoo_speedup.py --runs {args.runs} --threads {args.threads}", VERSION),
             f"ONNX Runtime CPU, {args.threads} intra-op thread(s), batch 1; every model's ONNX files interleaved, "
             f"{args.runs} timed runs each after 10 warm-up rounds; latency = ratio to the base in the same run of the fastest "
             f"medians over blocks of {BLOCK} runs (slow spells of this virtual machine add a fixed cost to every run, "
             "which a ratio of plain medians does not cancel; the p50 ratio's efficiency is in the JSON). "
             "Random weights (speed only). deploykit: `compress --target-macs 0.5 --criterion l2` (defaults: l2's "
             "normalization, round-to 8). Torch-Pruning 1.6: `GroupMagnitudeImportance(p=2)`, uniform ratio bisected "
             "to the same MACs, the option-A shortcut pruner given; `rt8` with `round_to=8`, `default` without. "
             "Efficiency = (1 − latency ratio) / (1 − MACs ratio); for detectors MACs are counted over the exported "
             "backbone + FPN (the timed graph). Compress s / peak MB: deploykit's wall time and the process's peak "
             "memory for the whole compress (graph, ranking, removal; no fine-tuning). TP s: Torch-Pruning's graph "
             "build + prune at the final ratio.", ""]
    if missing:
        lines += [f"**Partial table**: not yet run at this code version: {', '.join(missing)}.", ""]
    lines += ["| model | dk MACs | dk latency | **dk eff.** | compress s | peak MB | TP-rt8 MACs | TP-rt8 latency | "
              "TP-rt8 eff. | TP s | TP-default eff. |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        dk, rt8, dflt = r["deploykit"], r.get("tp-rt8", {}), r.get("tp-default", {})
        rt8_cells = (f"{fmt(rt8['macs'])} | {fmt(rt8.get('latency'))} | {fmt(rt8.get('efficiency'), 2)} | "
                     f"{fmt(rt8.get('prune_s'), 1)}" if "macs" in rt8 else f"{rt8.get('error')} | – | – | –")
        dflt_cell = fmt(dflt.get("efficiency"), 2) if "macs" in dflt else dflt.get("error", "–")
        lines.append(f"| {r['model']} | {fmt(dk['macs'])} | {fmt(dk['latency'])} | **{fmt(dk['efficiency'], 2)}** | "
                     f"{r['compress_s']:.0f} | {r['compress_peak_mb']} | {rt8_cells} | {dflt_cell} |")
    both = [r for r in rows if all("efficiency" in r.get(k, {}) for k in ("deploykit", *TP_ROWS))]
    lines.append("")
    if both:
        med = {k: statistics.median(r[k]["efficiency"] for r in both) for k in ("deploykit", *TP_ROWS)}
        lines.append(f"Median efficiency over the {len(both)} models every row finished: deploykit {med['deploykit']:.2f}, "
                     f"Torch-Pruning round_to=8 {med['tp-rt8']:.2f}, Torch-Pruning defaults {med['tp-default']:.2f}.")
    effs = [r["deploykit"]["efficiency"] for r in rows]
    if effs:
        low = [f"{r['model']} {r['deploykit']['efficiency']:.2f}" for r in rows if r["deploykit"]["efficiency"] < 0.85]
        lines.append(f"deploykit over all {len(effs)} models: min {min(effs):.2f}, median {statistics.median(effs):.2f}; "
                     f"below 0.85: {', '.join(low) or 'none'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "zoo_speedup", 100, job, markdown)


if __name__ == "__main__":
    main()
