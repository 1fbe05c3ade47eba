"""Where ``compress --target-latency`` lands: the measured latency of its pruned model against the target.

For each seed (the calibration batches' order), ``compress MODEL --target-latency T`` without
fine-tuning, at the defaults (the latency checks on: timed candidates before the removal,
timed again after it) and with ``--latency-checks 0`` (the table's prediction trusted). Every
pruned model is then timed again against the base at the end, in one process, with the same
estimator the checks use (ONNX Runtime CPU, batch 1, one thread, interleaved; each side's
fastest block median; the lowest of three readings). A run lands well when that ratio is at
or just below T; far below T, channels went that bought no needed time.

    .venv/bin/python benchmarks/latency_aim.py --seeds 0,1,2,3 --target 0.5 \\
        --weights ../shared/data/weights/resnet56-4bfd9763.th
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_version, provenance, write_results  # noqa: E402

JOB_VERSION = 1
VERSION = code_version(JOB_VERSION)
CONFIGS = {"defaults": {}, "latency-checks 0": {"latency_checks": 0}}


def run(args: argparse.Namespace) -> list[dict]:
    """One row per (seed, config): MACs, predicted and in-run measured ratios, the ratio re-timed at the end."""
    import torch

    import deploykit
    from deploykit.bench.latency_check import LatencyCheck
    from deploykit.bench.latency_table.timers import TimingConfig, get_timer
    from deploykit.zoo import build_model

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dk-aim-") as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for name, extra in CONFIGS.items():
                out = Path(tmp) / f"{name.replace(' ', '_')}-{seed}"
                t0 = time.perf_counter()
                r = deploykit.compress(model=args.model, weights=args.weights, out=str(out), data=args.data,
                                       target_latency=args.target, finetune_epochs=0, seed=seed,
                                       evaluate_base=False, evaluate_stages=False, **extra)
                checks = r["latency"]["checks"]
                rows.append({"seed": seed, "config": name, "macs": r["ratios"]["macs"],
                             "predicted": r["latency"].get("predicted_ratio"),
                             "previews": sum(c["why"] == "preview" for c in checks),
                             "timings": len(checks), "in_run": checks[-1]["measured"] if checks else None,
                             "seconds": round(time.perf_counter() - t0, 1), "artifact": str(out)})
                print(rows[-1], flush=True)
        built = build_model(args.model, weights=args.weights)
        x = built.example_input()
        timer = get_timer("ort", TimingConfig(batch=1, threads=1))
        check = LatencyCheck(timer, timer.model_fn(built.traced.eval(), x), x)
        models = {row["artifact"]: deploykit.load(row["artifact"]).model for row in rows}
        readings: dict[str, list[float]] = {a: [] for a in models}
        for _ in range(3):  # interleaved across models: a spell hits one reading of each, not all of one
            for a, m in models.items():
                readings[a].append(check.ratio(m))
        for row in rows:
            row["retimed"] = round(min(readings.pop(row.pop("artifact"))), 4)
    return rows


def markdown(args: argparse.Namespace, rows: list[dict]) -> str:
    cmd = (f"python benchmarks/latency_aim.py --model {args.model} --target {args.target} --seeds {args.seeds}"
           + (f" --weights {args.weights}" if args.weights else "") + f" --data {args.data}")
    lines = ["# Where `compress --target-latency` lands", "", *provenance(cmd, VERSION),
             (f"{args.model}, target {args.target} of the base latency, no fine-tuning. Re-timed: each pruned model "
              "against the base at the end, ONNX Runtime CPU, batch 1, 1 thread, interleaved, each side's fastest "
              "block median, the lowest of three readings. 1-minute load average at the end: "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."), ""]
    for name in CONFIGS:
        sel = [r for r in rows if r["config"] == name]
        rt = [r["retimed"] for r in sel]
        lines.append(f"{name}: re-timed {statistics.mean(rt):.3f} mean, {min(rt):.3f} to {max(rt):.3f}; MACs "
                     f"{statistics.mean(r['macs'] for r in sel):.3f} mean.")
    lines += ["", "| seed | config | MACs | predicted | candidates timed | timings | in-run measured | re-timed | s |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ir = "-" if r["in_run"] is None else f"{r['in_run']:.3f}"
        lines.append(f"| {r['seed']} | {r['config']} | {r['macs']:.3f} | {r['predicted']:.3f} | {r['previews']} | "
                     f"{r['timings']} | {ir} | {r['retimed']:.3f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar:resnet56")
    p.add_argument("--weights", default=None)
    p.add_argument("--data", default="cifar10:../shared/data/cifar10:train:jpeg75",
                   help="Calibration data (the criterion's default needs it).")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_aim.md"))
    args = p.parse_args()
    rows = run(args)
    write_results(args.out, markdown(args, rows), {"version": VERSION, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
