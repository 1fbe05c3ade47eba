"""The latency table against measurement on uniformly pruned copies of one model.

Every group of the model keeps about the same fraction of its channels (widths on the
``--round-to`` rule: multiples of 8, or ``16:8``, multiples of 16 and of 8 below 16), as
Torch-Pruning's local ranking prunes. For each fraction: the MACs ratio, the latency table's
predicted ratio (``deploykit profile`` defaults, measured first when not cached) and the
measured ratio (ONNX Runtime CPU, batch 1, one thread, every variant interleaved with the base
in one run, p50). Where the two latency columns part, ``--target-latency`` steers by a wrong
map. Trained weights with --weights (random ones, seeded, otherwise).

    .venv/bin/python benchmarks/uniform_widths.py --model cifar:resnet56 --runs 300
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, provenance  # noqa: E402

JOB_VERSION = 1
VERSION = code_version(JOB_VERSION)
FRACTIONS = (0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
RULES = ("8", "16:8")


def run(spec: str, runs: int, weights: str | None = None) -> list[dict]:
    """Rows of (rule, fraction): widths by stage, MACs ratio, predicted and measured latency ratios."""
    import torch

    import deploykit
    from deploykit.bench.latency import bench_onnx
    from deploykit.bench.latency_table.cost_model import attach_latency
    from deploykit.bench.latency_table.variants import prune_to_widths, uniform_widths
    from deploykit.graph.costs import CostModel, measure
    from deploykit.graph.groups import ModelGraph
    from deploykit.select.block_rounding import BlockRounding
    from deploykit.zoo import build_model
    from deploykit.zoo.base import BuiltModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # Trained weights where given: random ones can leave denormal activations deep in a network, whose cost
    # differs from variant to variant and run to run.
    built = build_model(spec, weights=weights, pretrained=False)
    example = built.example_input()
    graph = ModelGraph(built.traced, example)
    cost = CostModel(graph)
    latency = attach_latency(cost, spec, normalize="latency", targets=(), round_to=8)
    assert latency is not None
    full = {g.id: w for g, w in zip(cost.groups, cost.full)}
    prunable = {g.id for g in graph.prunable()}
    base_pred = latency.predict(cost.widths_full())
    base_macs = measure(built.traced, example).macs
    rows, paths = [], {}
    with tempfile.TemporaryDirectory(prefix="dk-uw-") as tmp:
        base_onnx = Path(tmp) / "base.onnx"
        deploykit.export_onnx(built, base_onnx)
        for rule in RULES:
            # "8": uniform_widths' own multiples of 8; BLOCK:STEP: the widths that rule allows.
            allowed = {gid: BlockRounding.parse(rule).widths(c) for gid, c in full.items()} if ":" in rule else None
            for f in FRACTIONS:
                widths = {gid: w for gid, w in uniform_widths(full, f, allowed).items() if gid in prunable}
                vec = [widths.get(g.id, c) for g, c in zip(cost.groups, cost.full)]
                net = prune_to_widths(built.traced, example, widths)
                path = Path(tmp) / f"{rule.replace(':', '_')}-{f}.onnx"
                deploykit.export_onnx(BuiltModel(model=net, spec=spec, input_shape=built.input_shape,
                                                 preprocess=built.preprocess), path)
                paths[(rule, f)] = path
                rows.append({"rule": rule, "fraction": f, "widths": sorted(set(widths.values())),
                             "macs": round(measure(net, example).macs / base_macs, 3),
                             "predicted": round(latency.predict(vec) / base_pred, 3)})
        res = bench_onnx([base_onnx, *paths.values()], [1], runs=runs, warmup=20, threads=1)
    p50 = {r.model: r.p50_ms for r in res}
    for row in rows:
        row["measured"] = round(p50[str(paths[(row["rule"], row["fraction"])])] / p50[str(base_onnx)], 3)
    return [{"base_ms": round(p50[str(base_onnx)], 4), "table_key": latency.lut.key.device}, *rows]


def markdown(spec: str, runs: int, out: list[dict], weights: str | None) -> str:
    head, rows = out[0], out[1:]
    lines = ["# The latency table against measurement on uniformly pruned copies", "",
             *provenance(f"python benchmarks/uniform_widths.py --model {spec} --runs {runs}"
                         + (f" --weights {weights}" if weights else ""), VERSION),
             (f"{spec}, {'weights ' + Path(weights).name if weights else 'random weights (seed 0)'}; ONNX Runtime CPU, "
              f"batch 1, 1 thread, {runs} interleaved runs per model, p50 (base {head['base_ms']} ms). Table: "
              f"`deploykit profile` defaults on {head['table_key']}. 1-minute load average at the end: "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."), "",
             "| rule | fraction | widths | MACs | predicted latency | measured latency | predicted / measured |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['fraction']} | {', '.join(map(str, r['widths']))} | {r['macs']:.3f} | "
                     f"{r['predicted']:.3f} | {r['measured']:.3f} | {r['predicted'] / r['measured']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar:resnet56")
    p.add_argument("--weights", default=None, help="Trained weights for the model (else random, seeded).")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "uniform_widths.md"))
    args = p.parse_args()
    out = run(args.model, args.runs, args.weights)
    md = markdown(args.model, args.runs, out, args.weights)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"model": args.model, "version": VERSION, "machine": platform.processor() or platform.machine(),
         "date": datetime.date.today().isoformat(), "rows": out}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
