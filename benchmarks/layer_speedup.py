"""Which layers did not get faster? Per-node ONNX Runtime profiles of the base and the pruned model.

For every model, in its own process: exactly ``deploykit compress SPEC --target-macs 0.5
--criterion l2 --round-to R`` for R = 8 (the default before this benchmark) and 16 (the default
after it), the base and the pruned models exported to ONNX and run in ONNX Runtime CPU (batch 1,
``--threads`` intra-op threads) with its profiler on, interleaved, ``--runs`` runs each. Per node of the optimized graph (the two graphs come from
the same modules, so their node names match) the median kernel time; a node's MACs are read
from the shapes the profiler records (output elements × the weight's fan-in, for Conv, FusedConv,
Gemm and MatMul).

Half the MACs promises half the time. A node's *excess* is its pruned time minus its base time ×
the model's MACs ratio: what it runs beyond the promise. The excesses add up to the whole
shortfall, so the tables say where the efficiency went, by operator type and by node (with the
node's own time and MACs ratios: a convolution whose time falls less than its MACs, a layer the
selection did not cut, or work MACs do not count at all).

    .venv/bin/python benchmarks/layer_speedup.py --models mobilenet_v3_large,resnet20 --runs 100
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, export_round_to_variants, per_model_main, provenance  # noqa: E402

JOB_VERSION = 1
ROUND_TO = (8, 16)
# The models below 0.85 realized efficiency in benchmarks/results/zoo_speedup.md.
SPECS = ["torchvision:mobilenet_v3_large", "torchvision:regnet_y_400mf", "torchvision:densenet121",
         "cifar:resnet20", "cifar:resnet56"]
VERSION = code_version(JOB_VERSION)
MAC_OPS = {"Conv", "FusedConv", "NhwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
TOP_NODES = 6


def _shape(entry: dict[str, list[int]]) -> list[int]:
    return next(iter(entry.values()))


def node_macs(op: str, args: dict[str, Any]) -> int:
    """MACs of one profiled node from its recorded shapes (0 for ops MACs do not count)."""
    if op not in MAC_OPS:
        return 0
    ins, outs = args.get("input_type_shape") or [], args.get("output_type_shape") or []
    if len(ins) < 2 or not outs:
        return 0
    out, w = _shape(outs[0]), _shape(ins[1])
    n_out = 1
    for d in out:
        n_out *= d
    if op.endswith("Conv"):
        fan_in = 1
        for d in w[1:]:
            fan_in *= d
        return n_out * fan_in
    return n_out * (w[0] if op.endswith("MatMul") else w[-1 if args.get("transB") else 0])


def profile_nodes(paths: dict[str, Path], runs: int, threads: int, tmp: Path) -> dict[str, dict[str, dict]]:
    """Per model, per node: op type, median kernel µs over ``runs`` interleaved runs, MACs, output shape."""
    import numpy as np

    from deploykit.export.session import ort_session

    sessions = {k: ort_session(p, threads, profile_prefix=str(tmp / k), quiet=True) for k, p in paths.items()}
    feeds = {}
    for k, s in sessions.items():
        i = s.get_inputs()[0]
        feeds[k] = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
                    .astype(np.float32)}
    for _ in range(10):  # warm-up, not in the medians (runs are counted from the end of each profile)
        for k, s in sessions.items():
            s.run(None, feeds[k])
    for _ in range(runs):
        for k, s in sessions.items():
            s.run(None, feeds[k])
    out: dict[str, dict[str, dict]] = {}
    for k, s in sessions.items():
        events = json.loads(Path(s.end_profiling()).read_text())
        times: dict[str, list[float]] = defaultdict(list)
        meta: dict[str, dict] = {}
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                continue
            name = e["name"][: -len("_kernel_time")]
            times[name].append(e["dur"])
            if name not in meta:
                op = e["args"].get("op_name", "?")
                meta[name] = {"op": op, "macs": node_macs(op, e["args"]),
                              "out": _shape(e["args"]["output_type_shape"][0]) if e["args"].get("output_type_shape") else []}
        out[k] = {n: {**meta[n], "us": statistics.median(t[-runs:])} for n, t in times.items()}
    return out


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: compress as zoo_speedup does, export both, profile both interleaved."""
    with tempfile.TemporaryDirectory(prefix="dk-layers-") as tmp_:
        tmp = Path(tmp_)
        paths, variants = export_round_to_variants(spec, target, ROUND_TO, tmp)
        errors = {k: v["error"] for k, v in variants.items() if "error" in v}
        if errors:
            raise RuntimeError(f"compress failed: {errors}")
        macs = {k: v["macs"] for k, v in variants.items()}
        nodes = profile_nodes(paths, runs, threads, tmp)
    return {"model": spec, "macs_ratio": macs, "nodes": nodes}


def analyse(row: dict[str, Any], key: str) -> dict[str, Any]:
    """Totals, the efficiency, and the excess by op type and by node of the pruned model ``key``."""
    base, pruned, r = row["nodes"]["base"], row["nodes"][key], row["macs_ratio"][key]
    tb, tp = sum(n["us"] for n in base.values()), sum(n["us"] for n in pruned.values())
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    nodes = []
    for name in set(base) | set(pruned):
        b, p = base.get(name), pruned.get(name)
        op = (b or p)["op"]
        ub, up = (b or {}).get("us", 0.0), (p or {}).get("us", 0.0)
        excess = up - ub * r
        by_op[op][0] += ub
        by_op[op][1] += up
        by_op[op][2] += excess
        mb, mp = (b or {}).get("macs", 0), (p or {}).get("macs", 0)
        nodes.append({"name": name, "op": op, "base_us": ub, "pruned_us": up, "excess_us": excess,
                      "time_ratio": up / ub if ub else None, "macs_ratio": mp / mb if mb else None,
                      "out": (b or p)["out"], "out_pruned": (p or {}).get("out")})
    nodes.sort(key=lambda n: -n["excess_us"])
    return {"base_us": tb, "pruned_us": tp, "time_ratio": tp / tb, "efficiency": (1 - tp / tb) / (1 - r),
            "by_op": sorted(by_op.items(), key=lambda kv: -kv[1][2]), "nodes": nodes}


GENERATED = re.compile(r"_token_\d+$")


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    lines = ["# Which layers did not get faster? Per-node profiles at half the MACs", "",
             *provenance(f"python benchmarks/layer_speedup.py --runs {args.runs} --threads {args.threads}", VERSION),
             f"ONNX Runtime CPU profiler, {args.threads} intra-op thread(s), batch 1, base and pruned interleaved, "
             f"median of {args.runs} runs per node (kernel time only: the sums are below the end-to-end latency of "
             "zoo_speedup.md). deploykit: `compress --target-macs 0.5 --criterion l2 --round-to R`, random weights. "
             "Output shapes are the profiler's: in the NCHWc layout a width is padded up to the channel block. Excess = pruned time − base time "
             "× the model's MACs ratio (what a node runs beyond the promise; the excesses add up to the shortfall). "
             "Time and MACs ratios per node are pruned / base; MACs from the recorded shapes (Conv, Gemm, MatMul).", ""]
    if missing:
        lines += [f"**Partial**: not yet run at this code version: {', '.join(missing)}.", ""]
    for row, key in [(row, f"rt{r}") for row in rows for r in ROUND_TO]:
        a = analyse(row, key)
        short = a["pruned_us"] - a["base_us"] * row["macs_ratio"][key]
        lines += [f"## {row['model']}, --round-to {key[2:]}", "",
                  f"MACs ratio {row['macs_ratio'][key]:.3f}; summed kernel time {a['base_us'] / 1000:.2f} → "
                  f"{a['pruned_us'] / 1000:.2f} ms (ratio {a['time_ratio']:.3f}, efficiency {a['efficiency']:.2f}); "
                  f"excess over the promise {short / 1000:.3f} ms.", "",
                  "| op type | base ms | pruned ms | time ratio | excess ms | share of excess |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for op, (ub, up, ex) in a["by_op"]:
            if ub + up < 0.005 * a["base_us"]:
                continue  # below half a percent of the model's time
            share = f"{ex / short:.0%}" if short > 0 else "–"
            lines.append(f"| {op} | {ub / 1000:.3f} | {up / 1000:.3f} | {up / ub if ub else float('nan'):.2f} | "
                         f"{ex / 1000:.3f} | {share} |")
        lines += ["", f"Nodes with the largest excess (top {TOP_NODES}):", "",
                  "| node | op | output (base → pruned) | base µs | time ratio | MACs ratio | excess µs |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        # Names ONNX Runtime makes up itself (ReorderOutput_token_N) are numbered per graph, so the same name in
        # the base and the pruned model may be different nodes: they count in the op-type sums above, not here.
        for n in [n for n in a["nodes"] if not GENERATED.search(n["name"])][:TOP_NODES]:
            shapes = f"{n['out']} → {n['out_pruned']}" if n["out_pruned"] != n["out"] else f"{n['out']} (uncut)"
            tr = "–" if n["time_ratio"] is None else f"{n['time_ratio']:.2f}"
            mr = "–" if n["macs_ratio"] is None else f"{n['macs_ratio']:.2f}"
            lines.append(f"| `{n['name'][-60:]}` | {n['op']} | {shapes} | {n['base_us']:.0f} | {tr} | {mr} | "
                         f"{n['excess_us']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "layer_speedup", 100, job, markdown)


if __name__ == "__main__":
    main()
