"""Time to a latency target from nothing: profile + ``compress --target-latency``, before and after.

For every torchvision zoo model, in its own process with an empty cache (``DEPLOYKIT_CACHE`` a fresh
folder, so the latency table and every single-layer point are measured, as on a user's first run):
``deploykit compress SPEC --target-latency 0.5 --normalize latency --round-to auto --criterion l2``
(random weights). Recorded: the whole run's wall seconds (goal: at most 180 on this 2-core machine),
the latency table's own seconds (``profile``), the single-layer points it measured, and the latency
ratio compress's last check measured (the target is met by timing, not by the table alone).

The *before* column holds rows of this script run from a checkout of commit 7d53726 (the table's
full 33-width scans, weights drawn and serialized per point); the *after* column rows of this
checkout. Both run with ``--results`` pointing at the same folder; rows are keyed by code version.
The predictor's accuracy with the new tables: benchmarks/latency_predictor.py.

    .venv/bin/python benchmarks/profile_time.py [--models resnet18,vgg11_bn]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, per_model_main, provenance, rows_of_version  # noqa: E402

JOB_VERSION = 1
ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_large",
       "mnasnet1_0", "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "inception_v3", "squeezenet1_1",
       "shufflenet_v2_x1_0", "convnext_tiny"]
SPECS = [f"torchvision:{m}" for m in ZOO]
VERSION = code_version(JOB_VERSION)
# The rows of the code before the faster tables (commit 7d53726 with this script copied in).
BEFORE = {"commit": "7d53726", "version": "e60b015aaaa6"}
GOAL_S = 180


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model from an empty cache: compress to ``target`` of the measured latency."""
    with tempfile.TemporaryDirectory(prefix="dk-pt-") as tmp:
        os.environ["DEPLOYKIT_CACHE"] = tmp
        import deploykit

        t0 = time.perf_counter()
        report = deploykit.compress(model=spec, out=f"{tmp}/out", target_latency=target, criterion="l2",
                                    normalize="latency", round_to="auto")
        wall = time.perf_counter() - t0
        tables = [json.loads(p.read_text()) for p in Path(tmp, "latency").glob("*.json")]
        points = sum(len(json.loads(p.read_text())) for p in Path(tmp, "latency", "points").glob("*.json"))
    checks = report["latency"]["checks"]
    return {"model": spec, "seconds": round(wall, 1), "profile_s": tables[0].get("seconds") if tables else None,
            "phases": tables[0].get("phases") if tables else None, "points": points, "measured": checks[-1]["measured"] if checks else None,
            "predicted": report["latency"]["predicted_ratio"], "load": round(os.getloadavg()[0], 1)}


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    before = rows_of_version(Path(args.results), BEFORE["version"])
    lines = ["# Time to a latency target from an empty cache: profile + compress, before and after", "",
             *provenance(f"python benchmarks/profile_time.py --threads {args.threads}", VERSION),
             f"`deploykit compress SPEC --target-latency {args.target} --normalize latency --round-to auto --criterion l2` "
             "in a fresh process with an empty cache (the latency table and every single-layer point measured), random "
             f"weights, ONNX Runtime CPU, batch 1, {args.threads} thread. s: the whole run's wall seconds (goal ≤ {GOAL_S}); "
             "profile s: the table's own (after: its phases, scan / layer grids / calibration, where recorded); points: single-layer measurements; measured: the latency ratio of compress's "
             f"last timing of the pruned model against the base. Before: commit {BEFORE['commit']} (code version "
             f"{BEFORE['version']}), the same script; after: this code version. Load: the 1-minute load average when the "
             "row ended (2 cores; above 1, another job shared the machine).", ""]
    if missing:
        lines += [f"**Partial**: not yet run at this code version: {', '.join(missing)}.", ""]

    def cell(r: dict | None, key: str, fmt: str = "{}") -> str:
        return fmt.format(r[key]) if r and r.get(key) is not None else "–"

    lines += ["| model | before s | after s | speedup | before profile s | after profile s | before points | after points "
              "| before measured | after measured | load before / after |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        b = before.get(r["model"])
        speed = f"{b['seconds'] / r['seconds']:.1f}x" if b else "–"
        ph = r.get("phases")
        phases = f" ({ph['scan']} / {ph['layers']} / {ph['calibration']})" if ph else ""
        lines.append(f"| {r['model']} | {cell(b, 'seconds')} | **{r['seconds']}** | {speed} | {cell(b, 'profile_s')} | "
                     f"{cell(r, 'profile_s')}{phases} | {cell(b, 'points')} | {cell(r, 'points')} | {cell(b, 'measured', '{:.3f}')} "
                     f"| {cell(r, 'measured', '{:.3f}')} | {cell(b, 'load')} / {cell(r, 'load')} |")
    over = [r["model"] for r in rows if r["seconds"] > GOAL_S]
    pairs = [(before[r["model"]]["seconds"], r["seconds"]) for r in rows if r["model"] in before]
    lines += ["", f"Over {GOAL_S} s after: {', '.join(over) if over else 'none'} (of {len(rows)} rows)."]
    if pairs:
        speed = statistics.median(b / a for b, a in pairs)
        lines += [f"Over the {len(pairs)} models with both rows: median speedup {speed:.1f}x; within {GOAL_S} s "
                  f"{sum(a <= GOAL_S for _, a in pairs)} after, {sum(b <= GOAL_S for b, _ in pairs)} before."]
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "profile_time", 1, job, markdown)


if __name__ == "__main__":
    main()
