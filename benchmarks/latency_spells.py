"""Two readings of one latency ratio from the same rounds: the median of all, and each side's fastest block.

A pruned copy of a model (every group at ``--fraction`` of its channels, multiples of 8) is
timed against its base ``--checks`` times in a row, as ``compress``'s latency checks time
them (ONNX Runtime CPU, batch 1, one thread, interleaved, ``--runs`` rounds a check). Each
check's rounds give both readings: the median ratio of all rounds, and the ratio of each
side's fastest median over blocks of 100 consecutive rounds (what :class:`LatencyCheck` reads).
Where load adds a fixed cost to every inference for a while, the first moves with it and the
second does not, as long as the check saw a quiet stretch. Trained weights with --weights
(random ones, seeded, otherwise).

    .venv/bin/python benchmarks/latency_spells.py --model cifar:resnet56 --checks 12 \\
        --weights ../shared/data/weights/resnet56-4bfd9763.th
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, provenance, write_results  # noqa: E402

JOB_VERSION = 1
VERSION = code_version(JOB_VERSION)


def run(spec: str, weights: str | None, fraction: float, checks: int, runs: int) -> list[dict]:
    """One row per check: seconds since the first, base and pruned medians, both ratios."""
    import torch

    from deploykit.bench.latency import fastest_block
    from deploykit.bench.latency_check import LatencyCheck
    from deploykit.bench.latency_table.timers import TimingConfig, get_timer
    from deploykit.bench.latency_table.variants import prune_to_widths, uniform_widths
    from deploykit.graph.groups import ModelGraph
    from deploykit.zoo import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    built = build_model(spec, weights=weights, pretrained=False)
    x = built.example_input()
    graph = ModelGraph(built.traced, x)
    full = {g.id: g.channels for g in graph.prunable()}
    net = prune_to_widths(built.traced, x, uniform_widths(full, fraction))
    timer = get_timer("ort", TimingConfig(batch=1, threads=1))
    block = LatencyCheck.block
    fns = {"base": timer.model_fn(built.traced.eval(), x), "now": timer.model_fn(net.eval(), x)}
    rows, t0 = [], time.perf_counter()
    for _ in range(checks):
        t = timer.time_models(fns, runs, 1)
        rows.append({"at_s": round(time.perf_counter() - t0, 1),
                     "base_ms": round(statistics.median(t["base"]) * 1e3, 3),
                     "pruned_ms": round(statistics.median(t["now"]) * 1e3, 3),
                     "median_ratio": round(statistics.median(t["now"]) / statistics.median(t["base"]), 4),
                     "block_ratio": round(fastest_block(t["now"], block) / fastest_block(t["base"], block), 4)})
    return rows


def markdown(args: argparse.Namespace, rows: list[dict]) -> str:
    cmd = (f"python benchmarks/latency_spells.py --model {args.model} --fraction {args.fraction} --checks {args.checks} "
           f"--runs {args.runs}" + (f" --weights {args.weights}" if args.weights else ""))
    med = [r["median_ratio"] for r in rows]
    blk = [r["block_ratio"] for r in rows]
    lines = ["# One latency ratio read two ways from the same rounds", "", *provenance(cmd, VERSION),
             (f"{args.model}, {'weights ' + Path(args.weights).name if args.weights else 'random weights (seed 0)'}, "
              f"every group at {args.fraction} of its channels; ONNX Runtime CPU, batch 1, 1 thread, {args.runs} "
              f"interleaved rounds per check. Median: of all rounds; block: each side's fastest median over blocks of "
              f"100 consecutive rounds (deploykit's latency checks). 1-minute load average at the end: "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."), "",
             f"Median ratio: {min(med):.4f} to {max(med):.4f} (spread {max(med) - min(med):.4f}); "
             f"block ratio: {min(blk):.4f} to {max(blk):.4f} (spread {max(blk) - min(blk):.4f}).", "",
             "| check | at s | base ms (median) | pruned ms (median) | median ratio | block ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(rows):
        lines.append(f"| {i} | {r['at_s']} | {r['base_ms']:.3f} | {r['pruned_ms']:.3f} | {r['median_ratio']:.4f} | "
                     f"{r['block_ratio']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar:resnet56")
    p.add_argument("--weights", default=None, help="Trained weights for the model (else random, seeded).")
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--checks", type=int, default=12)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_spells.md"))
    args = p.parse_args()
    rows = run(args.model, args.weights, args.fraction, args.checks, args.runs)
    write_results(args.out, markdown(args, rows), {"version": VERSION, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
