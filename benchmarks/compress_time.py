"""Where compress spends its time, against Torch-Pruning's graph build and prune, on the same models.

For every model, in its own process: Torch-Pruning 1.6's dependency graph build alone, and its
``BasePruner`` (``GroupMagnitudeImportance(p=2)``, ``round_to=8``) graph build + prune at the uniform
ratio that reaches half the MACs (zoo_speedup.py's ``tp_prune``: the time of the final ratio's
run); then ``deploykit compress SPEC --target-macs 0.5 --criterion l2`` (no fine-tuning) ``--runs``
times, with report.json's seconds per phase (median over the runs) and the process's peak memory
after the first run. Random weights: this measures time, not accuracy.

    .venv/bin/python benchmarks/compress_time.py [--models resnet50] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, per_model_main, provenance  # noqa: E402
from zoo_speedup import tp_prune  # noqa: E402

JOB_VERSION = 1
SPECS = ["torchvision:resnet50", "torchvision:densenet121", "ultralytics:yolov8n.yaml"]
VERSION = code_version(JOB_VERSION)


def tp_graph_seconds(built: Any) -> float:
    """Torch-Pruning's dependency graph build alone (what deploykit's "trace graph" phase also does)."""
    import torch_pruning as tp

    from deploykit.graph.pruners import customized_pruners

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.DependencyGraph().build_dependency(built.traced, built.example_input(), customized_pruners=customized_pruners())
    return time.perf_counter() - t0


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: Torch-Pruning's graph build and prune, then deploykit's compress ``runs`` times."""
    import torch

    import deploykit
    from deploykit.zoo import build_model

    torch.set_num_threads(threads)
    base = build_model(spec, pretrained=False)
    row: dict[str, Any] = {"model": spec, "input": list(base.input_shape), "tp_graph_s": tp_graph_seconds(base)}
    _, seconds, err = tp_prune(base, target, 8)
    row["tp_prune_s"] = seconds if not err else None
    row["tp_error"] = err
    totals, phases = [], []
    with tempfile.TemporaryDirectory(prefix="dk-ct-") as tmp:
        for i in range(runs):
            report = deploykit.compress(model=spec, out=f"{tmp}/dk{i}", target_macs=target, criterion="l2")
            totals.append(report["seconds"])
            phases.append(report["timings"])
            if i == 0:
                row["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
                row["macs"] = report["ratios"]["macs"]
    row["load"] = round(os.getloadavg()[0], 1)  # other jobs on the machine stretch every phase
    row["dk_s"] = statistics.median(totals)
    row["dk_phases"] = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    return row


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    phases = list(dict.fromkeys(k for r in rows for k in r["dk_phases"]))
    lines = ["# Compress time: deploykit's phases against Torch-Pruning's graph build + prune", "",
             *provenance(f"python benchmarks/compress_time.py --runs {args.runs} --threads {args.threads}", VERSION),
             f"{args.threads} torch thread(s). deploykit: `compress --target-macs {args.target} --criterion l2`, no "
             f"fine-tuning, median of {args.runs} runs of report.json's `seconds` (the whole run, from settings to "
             "report) and `timings` (per phase). Torch-Pruning 1.6: `DependencyGraph.build_dependency` alone, and "
             "`BasePruner` (magnitude p=2, `round_to=8`) graph build + prune at the ratio reaching the same MACs. "
             "Peak MB: the process's peak resident memory after the first compress (Torch-Pruning ran before it in "
             "the same process). Random weights.", ""]
    if missing:
        lines += [f"**Partial**: not yet run at this code version: {', '.join(missing)}.", ""]
    if rows:
        lines += [f"1-minute load average when each row ended: {', '.join(str(r.get('load')) for r in rows)} "
                  f"(on {os.cpu_count()} cores; above 1, other jobs shared the machine).", ""]
    lines += [("Torch-Pruning's time starts from a built model; so does deploykit's \"after build\" (its whole run less "
               "the `build model` phase), and the ratio compares the two. The whole run's ratio is in the next column."), ""]
    lines += ["| model | input | TP graph s | TP graph + prune s | deploykit s | after build s | **ratio** | "
              "whole-run ratio | peak MB | " + " | ".join(phases) + " |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in phases) + " |"]
    for r in rows:
        tp_s = f"{r['tp_prune_s']:.2f}" if r["tp_prune_s"] is not None else f"failed: {r['tp_error']}"
        after = r["dk_s"] - r["dk_phases"].get("build model", 0.0)
        ratio = f"**{after / r['tp_prune_s']:.1f}x**" if r["tp_prune_s"] else "–"
        whole = f"{r['dk_s'] / r['tp_prune_s']:.1f}x" if r["tp_prune_s"] else "–"
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['tp_graph_s']:.2f} | {tp_s} | "
                     f"{r['dk_s']:.2f} | {after:.2f} | {ratio} | {whole} | {r['peak_mb']} | "
                     + " | ".join(f"{r['dk_phases'].get(k, 0.0):.2f}" for k in phases) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "compress_time", 3, job, markdown)


if __name__ == "__main__":
    main()
