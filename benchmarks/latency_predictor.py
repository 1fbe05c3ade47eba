"""Is the latency table right? Predicted against measured end-to-end latency of random pruned variants.

For each model: the latency table is measured (``deploykit profile`` defaults: ONNX
Runtime CPU, batch 1, one thread; or read from the cache), then N random pruned
variants are made (every group keeps a uniform random fraction of its channels in
[0.3, 1], rounded to a multiple of 8 channels, or stays whole with probability
0.15), exported to ONNX and timed end to end together with the base model,
interleaved round-robin, right after the table's calibration. Reported:

* MAPE of the predicted latency (ms) against the measured p50 (the issue's number);
* MAPE of the predicted ratio to the base against the measured ratio to the base
  (what ``--target-latency`` relies on; the load of a shared machine cancels in it);
* the same ratio error for a MACs-proportional predictor (latency ratio = MACs ratio),
  the usual stand-in, for comparison.

Weights are random (latency does not depend on them). Run:
``.venv/bin/python benchmarks/latency_predictor.py`` (``--models resnet18 --variants 5``
for a quick look); writes benchmarks/results/latency_predictor.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import git_commit  # noqa: E402
from deploykit.bench.machine import load_average, machine  # noqa: E402
from deploykit.bench.latency_table.predictor import LatencyModel  # noqa: E402
from deploykit.bench.latency_table.profile import ProfileConfig, load_or_profile  # noqa: E402
from deploykit.bench.latency_table.timers import TimingConfig, get_timer  # noqa: E402
from deploykit.bench.latency_table.variants import prune_to_widths, random_widths  # noqa: E402
from deploykit.graph.costs import CostModel, measure  # noqa: E402
from deploykit.graph.groups import ModelGraph  # noqa: E402
from deploykit.progress import RichReporter  # noqa: E402
from deploykit.zoo import build_model  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0"]


def check_model(name: str, args: argparse.Namespace, rep: RichReporter) -> dict:
    """Profile one model, then time its random variants against the prediction."""
    spec = f"torchvision:{name}"
    built = build_model(spec, input_shape=(1, 3, args.size, args.size))
    example = built.example_input()
    graph = ModelGraph(built.traced, example)
    cm = CostModel(graph)
    cfg = ProfileConfig(timing=TimingConfig(threads=args.threads))
    t0 = time.perf_counter()
    lut, source = load_or_profile(cm, spec, cfg, rep, refresh=args.refresh)
    profile_s = time.perf_counter() - t0
    lm = LatencyModel(cm, lut)
    timer = get_timer("ort", cfg.timing)
    rng = np.random.default_rng(args.seed)
    full = {g.id: g.channels for g in graph.prunable()}
    units = {g.id: g.atom_size for g in graph.prunable()}
    fns = {"base": timer.model_fn(graph.model, example)}
    pred = {"base": lm.predict(cm.widths_full())}
    macs = {"base": measure(graph.model, example).macs}
    with rep.task(f"{name}: variants", args.variants) as task:
        for i in range(args.variants):
            by_id = random_widths(full, units, rng, round_to=args.round_to)
            w = [by_id.get(g.id, g.channels) for g in cm.groups]
            module = prune_to_widths(graph.model, example, by_id)
            fns[i] = timer.model_fn(module, example)
            pred[i] = lm.predict(w)
            macs[i] = measure(module, example).macs
            task.advance()
    load_before = load_average()
    with rep.task(f"{name}: timing {len(fns)} models interleaved", args.runs) as task:
        times = timer.time_models(fns, args.runs, max(3, args.runs // 10), task)
    meas = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    fast = {k: float(np.percentile(v, 10)) * 1e3 for k, v in times.items()}  # the machine left alone
    load = lut.calibration.load
    rows = []
    for k in pred:
        if k == "base":
            continue
        r_meas = meas[k] / meas["base"]
        r_pred = pred[k] / pred["base"]
        r_macs = macs[k] / macs["base"]
        rows.append({"variant": k, "measured_ms": round(meas[k], 4), "predicted_ms": round(pred[k], 4),
                     "abs_err": abs(pred[k] - meas[k]) / meas[k], "fast_ms": round(fast[k], 4),
                     "fast_err": abs(pred[k] / load - fast[k]) / fast[k], "ratio_measured": round(r_meas, 4),
                     "ratio_predicted": round(r_pred, 4), "ratio_err": abs(r_pred - r_meas) / r_meas,
                     "macs_ratio": round(r_macs, 4), "macs_ratio_err": abs(r_macs - r_meas) / r_meas})
    base_err = abs(pred["base"] - meas["base"]) / meas["base"]
    return {
        "model": name, "input": list(example.shape), "table": source, "profile_seconds": round(profile_s, 1),
        "table_seconds": lut.seconds, "layer_tables": len(lut.layers), "groups": len(lut.groups),
        "calibration": lut.calibration.model_dump(exclude={"points"}),
        "base_measured_ms": round(meas["base"], 4), "base_predicted_ms": round(pred["base"], 4), "base_err": base_err,
        "mape": float(np.mean([r["abs_err"] for r in rows])), "max_err": float(np.max([r["abs_err"] for r in rows])),
        "fast_mape": float(np.mean([r["fast_err"] for r in rows])),
        "ratio_mape": float(np.mean([r["ratio_err"] for r in rows])),
        "macs_ratio_mape": float(np.mean([r["macs_ratio_err"] for r in rows])),
        "load_average": {"before_timing": load_before, "after": load_average()}, "variants": rows,
    }


def write_markdown(results: list[dict], args: argparse.Namespace, wall: float, path: Path) -> None:
    """The results table, the machine and the command."""
    m = machine()
    # A fresh cache folder means every table and single-layer point was measured by this run.
    cache = f"DEPLOYKIT_CACHE={os.environ['DEPLOYKIT_CACHE']} " if os.environ.get("DEPLOYKIT_CACHE") else ""
    lines = [
        "# Latency predictor: predicted vs measured end-to-end latency (ONNX Runtime CPU)",
        "",
        f"Command: `{cache}.venv/bin/python benchmarks/latency_predictor.py {' '.join(sys.argv[1:])}` (wall time {wall / 60:.1f} min)",
        "",
        f"Machine: {m['cpu']} ({m['cpus']} cpus), shared with other engineers' jobs (load averages below); "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}; {m['date'][:10]}; commit {git_commit()}.",
        "",
        f"Setting: input {args.size}x{args.size}, batch 1, {args.threads} intra-op thread(s). Per model: the latency "
        f"table (`deploykit profile` defaults: cliffs found by bisection over the top 32 channels of each group, "
        f"6-point layer grids, 2 passes per point of at most 10 runs (fewer for a slow layer), calibration on 4 "
        f"uniform and 8 random variants in at most 30 rounds (fewer for a slow model), terms chosen by leave-one-out), then {args.variants} random pruned variants (each group keeps a uniform fraction in "
        f"[0.3, 1] rounded to a multiple of {args.round_to}, or stays whole with probability 0.15) timed with the "
        f"base model, {args.runs} interleaved rounds, p50.",
        "",
        "| model | variants | MAPE (ms, p50) | max error | MAPE (ms, p10) | ratio MAPE | MACs-ratio MAPE | base measured ms "
        "| base predicted ms | table s | load (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        la = r["load_average"]["before_timing"]
        lines.append(f"| {r['model']} | {len(r['variants'])} | **{100 * r['mape']:.1f}%** | {100 * r['max_err']:.1f}% | "
                     f"{100 * r['fast_mape']:.1f}% | {100 * r['ratio_mape']:.1f}% | {100 * r['macs_ratio_mape']:.1f}% | {r['base_measured_ms']:.2f} | "
                     f"{r['base_predicted_ms']:.2f} | {r['table_seconds']:.0f} | {la[0] if la else '-'} |")
    lines += [
        "",
        "MAPE (ms, p50): mean |predicted − measured| / measured over the variants, measured = p50 (goal ≤ 10%). "
        "MAPE (ms, p10): the table's prediction for the machine left alone (without its load factor) against the "
        "10th percentile, what a shared machine's load cannot inflate. Ratio MAPE: the same for the "
        "latency ratio to the base model measured in the same interleaved rounds (what `--target-latency` uses; "
        "machine load cancels). MACs-ratio MAPE: predicting the latency ratio by the MACs ratio instead.",
        "",
        "Calibration (end to end = load × (scale × Σ layer tables + fixed + per-MB × activation MB "
        "+ per-MB × weight MB)):",
        "",
    ]
    for r in results:
        c = r["calibration"]
        lines.append(f"- {r['model']}: scale {c['scale']:.3f}, fixed {c['fixed_ms']:.3f} ms, {c['ms_per_mb']:.4f} ms/MB activations, "
                     f"{c['ms_per_weight_mb']:.4f} ms/MB weights, "
                     f"load {c['load']:.3f}; {r['layer_tables']} layer tables, {r['groups']} groups.")
    lines += ["", "Per variant (measured / predicted ms; measured / predicted / MACs ratio):", ""]
    for r in results:
        cells = ", ".join(f"{v['measured_ms']:.2f}/{v['predicted_ms']:.2f} ({v['ratio_measured']:.3f}/"
                          f"{v['ratio_predicted']:.3f}/{v['macs_ratio']:.3f})" for v in r["variants"])
        lines.append(f"- {r['model']}: {cells}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--variants", type=int, default=20)
    ap.add_argument("--runs", type=int, default=30, help="interleaved rounds (every variant and the base once per round)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refresh", action="store_true", help="measure the tables again even if cached")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency_predictor.md"))
    args = ap.parse_args()
    rep = RichReporter()
    t0 = time.perf_counter()
    results = []
    out = Path(args.out)
    for name in args.models.split(","):
        results.append(check_model(name, args, rep))
        r = results[-1]
        rep.log(f"{name}: MAPE {100 * r['mape']:.1f}%, ratio MAPE {100 * r['ratio_mape']:.1f}%, "
                f"MACs-ratio MAPE {100 * r['macs_ratio_mape']:.1f}%")
        out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=1))
        write_markdown(results, args, time.perf_counter() - t0, out)
    rep.log(f"wrote {out} ({datetime.timedelta(seconds=round(time.perf_counter() - t0))})")


if __name__ == "__main__":
    main()
