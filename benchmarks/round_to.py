"""Which channel multiple does ONNX Runtime's CPU convolution reward? ``--round-to`` 8, 16 and 16:8 at half the MACs.

ONNX Runtime runs CPU convolutions in MLAS's NCHWc layout, whose channel block is 16 floats
where the CPU has AVX-512F and 8 otherwise: a width between two blocks is padded up and costs
the whole block (benchmarks/results/layer_speedup.md shows ResNet-20's 24- and 56-channel
layers running as 32 and 64). For every model, in its own process: exactly ``deploykit
compress SPEC --target-macs 0.5 --criterion l2 --round-to R`` for each R, every model exported
and timed in ONNX Runtime CPU (batch 1, ``--threads`` intra-op threads) interleaved with the
base in one run; efficiency = (1 − latency ratio) / (1 − MACs ratio). Random weights: speed only.

    .venv/bin/python benchmarks/round_to.py --models resnet20,mobilenet_v3_large --runs 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, export_round_to_variants, per_model_main, provenance  # noqa: E402

JOB_VERSION = 1
ROUND_TO: tuple[int | str, ...] = (8, 16, "16:8")  # 16:8: multiples of 16, or 8 below 16
SPECS = ["cifar:resnet20", "cifar:resnet56", "torchvision:mobilenet_v3_large", "torchvision:regnet_y_400mf",
         "torchvision:densenet121", "torchvision:mobilenet_v2", "torchvision:resnet18", "torchvision:efficientnet_b0"]
VERSION = code_version(JOB_VERSION)


def nchwc_block() -> int:
    """MLAS's NCHWc channel block on this CPU: 16 floats with AVX-512F, else 8."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: compress at each round-to, export, time all interleaved with the base."""
    from deploykit.bench.latency import bench_onnx

    row: dict[str, Any] = {"model": spec, "nchwc_block": nchwc_block()}
    with tempfile.TemporaryDirectory(prefix="dk-rt-") as tmp_:
        paths, variants = export_round_to_variants(spec, target, ROUND_TO, Path(tmp_))
        row.update(variants)
        lat = {r.model: r.p50_ms for r in bench_onnx(list(paths.values()), [1], runs=runs, warmup=10, threads=threads)}
    row["p50_ms"] = {k: lat[str(p)] for k, p in paths.items()}
    for k in paths:
        if k != "base":
            c = row[k]
            c["latency"] = row["p50_ms"][k] / row["p50_ms"]["base"]
            c["efficiency"] = (1 - c["latency"]) / max(1 - c["macs"], 1e-9)
    return row


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    block = rows[0]["nchwc_block"] if rows else nchwc_block()
    lines = ["# --round-to 8, 16 and 16:8 on ONNX Runtime CPU, at half the MACs", "",
             *provenance(" ".join(["python benchmarks/round_to.py", *sys.argv[1:]]), VERSION),
             f"MLAS NCHWc channel block on this CPU: {block}. ONNX Runtime CPU, {args.threads} intra-op thread(s), "
             f"batch 1; base and every setting interleaved, {args.runs} timed runs after 10 warm-up rounds; latency = "
             "p50 ratio to the base in the same run. `compress --target-macs 0.5 --criterion l2 --round-to R`, random "
             "weights. Efficiency = (1 − latency ratio) / (1 − MACs ratio).", ""]
    if missing:
        lines += [f"**Partial table**: not yet run at this code version: {', '.join(missing)}.", ""]
    head = " | ".join(f"rt{r} MACs | rt{r} latency | **rt{r} eff.**" for r in ROUND_TO)
    lines += [f"| model | {head} |", "| --- |" + " ---: |" * (3 * len(ROUND_TO))]
    for row in rows:
        cells = []
        for r in ROUND_TO:
            c = row.get(f"rt{r}", {})
            cells.append(f"{c['macs']:.3f} | {c['latency']:.3f} | **{c['efficiency']:.2f}**" if "efficiency" in c
                         else f"{c.get('error', '–')} | – | –")
        lines.append(f"| {row['model']} | {' | '.join(cells)} |")
    done = [r for r in rows if all("efficiency" in r.get(f"rt{k}", {}) for k in ROUND_TO)]
    if done:
        meds = ", ".join(f"rt{k} {statistics.median(r[f'rt{k}']['efficiency'] for r in done):.2f}" for k in ROUND_TO)
        mins = ", ".join(f"rt{k} {min(r[f'rt{k}']['efficiency'] for r in done):.2f}" for k in ROUND_TO)
        lines += ["", f"Over the {len(done)} models: median efficiency {meds}; minimum {mins}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "round_to", 60, job, markdown)


if __name__ == "__main__":
    main()
