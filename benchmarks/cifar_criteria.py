"""Every criterion on the same work: CIFAR ResNet-20 and ResNet-56 at half the MACs, one fine-tuning budget.

For each model and each registered criterion, ``deploykit.compress`` prunes the pretrained
CIFAR ResNet to target MACs 0.5 with the criterion's defaults (normalization, schedule,
recovery step) with every width free (``--round-to 1``), calibrates on 8 batches of 64 JPEG75 training images, recalibrates
BatchNorm on 20 batches, and fine-tunes for the same number of iterations (SGD, nesterov
momentum 0.9, lr 0.01 cosine, weight decay 5e-4, batch 64 from the 50k JPEG75 training set,
random crop and flip, no distillation). Top-1 is measured on the lossless 1k and the JPEG75
10k test images after pruning, after BatchNorm recalibration and after the budget.

Torch-Pruning's own magnitude pruning is the reference row: ``tp.pruner.BasePruner`` with
``GroupMagnitudeImportance`` (its defaults: L2, mean over the group, per-layer uniform
ratio), the ratio bisected until the measured MACs are at most half, then the same BN
recalibration and the same fine-tuning loop (deploykit's Trainer and batch stream).

Scoring time is the time spent choosing channels (calibration passes included; the search
of ga and blend; dcff's KL selection), measured inside the same run; the least-squares
reconstruction (lasso's default) is timed apart. A separate interleaved measurement
compares operator_norm's scoring time with the active criteria fisher and taylor on the
same calibration batches (A B C A B C ..., medians).

    .venv/bin/python benchmarks/cifar_criteria.py [--iterations 200] [--workers 2] [--work /tmp/dk-cifar-criteria]

Runs are separate processes (``--workers`` at a time, one torch thread each); a run whose
result exists in ``--work`` is not repeated. Writes benchmarks/results/cifar_criteria.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
TP_ROW = "tp_magnitude"
TARGET = 0.5
TRAIN_IMAGES = 50_000


def _specs(data: Path) -> tuple[str, str, str]:
    root = data / "cifar10"
    return f"cifar10:{root}:jpeg75", f"cifar10:{root}:test:jpeg75", f"cifar10:{root}:test:lossless"


# -- one run per process -------------------------------------------------------------------------
class Timers:
    """Wall time spent inside instrumented functions, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)


def run_criterion(model: str, criterion: str, args: argparse.Namespace) -> dict[str, Any]:
    import deploykit
    import deploykit.prune.reconstruct as reconstruct
    import deploykit.train.dcff as dcff
    import deploykit.train.schedules as schedules
    from deploykit.select.blend import BlendedCriteria
    from deploykit.select.ga import GeneticSelection

    timers = Timers()
    timers.wrap(schedules, "score_groups", "scoring")
    timers.wrap(dcff, "score_groups", "scoring")
    timers.wrap(GeneticSelection, "select", "scoring")
    timers.wrap(BlendedCriteria, "select", "scoring")
    timers.wrap(reconstruct, "reconstruct", "recover")
    train, _, lossless = _specs(args.data)
    out = args.work / "artifacts" / f"{model}-{criterion}"
    t = time.perf_counter()
    report = deploykit.compress(
        model=f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]), out=str(out), force=True,
        target_macs=TARGET, criterion=criterion, data=train, eval_data=[lossless], calib_batches=8,
        batch_size=args.batch_size, finetune_epochs=args.iterations / (TRAIN_IMAGES // args.batch_size), lr=0.01,
        bn_batches=20, evaluate_base=False, seed=0, round_to=1)
    total = time.perf_counter() - t
    return {"report": report, "scoring_s": timers.seconds.get("scoring"), "recover_s": timers.seconds.get("recover"),
            "total_s": total}


def run_tp_magnitude(model: str, args: argparse.Namespace) -> dict[str, Any]:
    import copy

    import torch
    import torch_pruning as tp

    from deploykit.data import load_dataset
    from deploykit.graph.costs import measure
    from deploykit.graph.pruners import customized_pruners
    from deploykit.train.loop import TrainConfig, Trainer, cosine_lr, evaluate, recalibrate_bn
    from deploykit.train.stream import BatchStream
    from deploykit.zoo import build_model

    t_all = time.perf_counter()
    train_spec, jpeg_spec, lossless_spec = _specs(args.data)
    built = build_model(f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]))
    base, pre, x = built.model.eval(), built.preprocess, built.example_input()
    base_macs = measure(base, x).macs

    def pruned_at(ratio: float) -> torch.nn.Module:
        m = copy.deepcopy(base)
        pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                                      ignored_layers=[m.linear], customized_pruners=customized_pruners())
        pruner.step()
        return m

    t = time.perf_counter()
    lo, hi = 0.0, 0.9
    for _ in range(10):  # the smallest uniform ratio whose measured MACs meet the target
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if measure(pruned_at(mid), x).macs <= TARGET * base_macs else (mid, hi)
    model_ = pruned_at(hi)
    scoring = time.perf_counter() - t
    costs, base_costs = measure(model_, x), measure(base, x)
    tests = {"jpeg": load_dataset(jpeg_spec), "lossless": load_dataset(lossless_spec)}
    train_ds = load_dataset(f"{train_spec.rsplit(':', 1)[0]}:train:jpeg75")

    def top1() -> dict[str, float]:
        return {k: round(evaluate(model_, ds, pre), 2) for k, ds in tests.items()}

    stages = {"after_pruning": top1()}
    recalibrate_bn(model_, train_ds, pre, num_batches=20)
    stages["after_bn_recalibration"] = top1()
    cfg = TrainConfig(epochs=1.0, lr=0.01, batch_size=args.batch_size, weight_decay=5e-4, optimizer="sgd", seed=0, augment=True)
    trainer = Trainer(model_, cfg)
    stream = BatchStream(train_ds, pre, args.batch_size, seed=0, augment=True)
    for it in range(args.iterations):
        trainer.step(*stream.batch(it), lr=cosine_lr(it, args.iterations, cfg.lr))
    model_.eval()
    stages["final"] = top1()
    return {"ratio": hi, "macs": costs.macs / base_costs.macs, "params": costs.params / base_costs.params,
            "stages": stages, "scoring_s": scoring, "total_s": time.perf_counter() - t_all}


def run_base(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from deploykit.data import load_dataset
    from deploykit.train.loop import evaluate
    from deploykit.zoo import build_model

    _, jpeg, lossless = _specs(args.data)
    built = build_model(f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]))
    return {k: round(evaluate(built.model, load_dataset(s), built.preprocess), 2) for k, s in (("jpeg", jpeg), ("lossless", lossless))}


def run_timing(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """operator_norm against active criteria on the same calibration batches, interleaved."""
    import torch

    from deploykit.data import batches, load_dataset
    from deploykit.graph.groups import ModelGraph
    from deploykit.importance import ScoringContext, get_criterion, score_groups
    from deploykit.zoo import build_model

    train, _, _ = _specs(args.data)
    built = build_model(f"cifar:{model}", weights=str(args.data / "weights" / WEIGHTS[model]))
    graph = ModelGraph(built.model, built.example_input())
    ctx = ScoringContext(built.model, graph)
    calib = list(batches(load_dataset(f"{train.rsplit(':', 1)[0]}:train:jpeg75"), built.preprocess, args.batch_size,
                         shuffle=True, seed=0, limit=8))
    names = ["operator_norm", "fisher", "taylor"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.timing_repeats):
        for n in names:
            crit = get_criterion(n)
            t = time.perf_counter()
            score_groups(crit, ctx, calib if crit.requires_data else None)
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"median_s": med, "runs": times, "images": sum(int(x.shape[0]) for x, _ in calib),
            "threads": torch.get_num_threads()}


def one(job: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    kind, model, *rest = job.split(":")
    if kind == "base":
        result = run_base(model, args)
    elif kind == "timing":
        result = run_timing(model, args)
    elif rest[0] == TP_ROW:
        result = run_tp_magnitude(model, args)
    else:
        result = run_criterion(model, rest[0], args)
    path = args.work / f"{job.replace(':', '-')}.json"
    path.write_text(json.dumps(result, indent=1, default=str))


# -- driver --------------------------------------------------------------------------------------
def jobs(models: list[str], criteria: list[str]) -> list[str]:
    out = []
    for m in models:
        out += [f"base:{m}", f"timing:{m}"] + [f"run:{m}:{c}" for c in [TP_ROW, *criteria]]
    # Expensive ResNet-56 runs first, so the two workers finish together.
    return sorted(out, key=lambda j: (0 if "resnet56" in j else 1))


def launch(job: str, args: argparse.Namespace) -> tuple[str, int, float]:
    path = args.work / f"{job.replace(':', '-')}.json"
    if path.exists():
        return job, 0, 0.0
    log = args.work / "logs" / f"{job.replace(':', '-')}.log"
    cmd = [sys.executable, __file__, "--one", job, "--work", str(args.work), "--data", str(args.data),
           "--iterations", str(args.iterations), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--timing-repeats", str(args.timing_repeats)]
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    dt = time.perf_counter() - t
    print(f"{datetime.now().strftime('%H:%M:%S')} {job}: rc={rc} {dt:.0f}s", flush=True)
    return job, rc, dt


def fmt(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def table(args: argparse.Namespace, models: list[str], criteria: list[str], wall: float) -> str:
    def load(job: str) -> dict | None:
        p = args.work / f"{job.replace(':', '-')}.json"
        return json.loads(p.read_text()) if p.exists() else None

    lines = []
    for m in models:
        base = load(f"base:{m}") or {}
        lines += [f"### CIFAR {m} (base top-1: lossless 1k {base.get('lossless', '-')}, JPEG75 10k {base.get('jpeg', '-')})", "",
                  "| criterion | normalize | schedule / recover | MACs | params | lossless 1k: pruned / BN / budget "
                  "| JPEG75 10k: pruned / BN / budget | scoring s | total s |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in [TP_ROW, *criteria]:
            r = load(f"run:{m}:{c}")
            if r is None:
                lines.append(f"| {c} | (failed or not run) | | | | | | | |")
                continue
            if c == TP_ROW:
                st = r["stages"]
                lo = " / ".join(fmt(st[s]["lossless"], 2) for s in ("after_pruning", "after_bn_recalibration", "final"))
                jp = " / ".join(fmt(st[s]["jpeg"], 2) for s in ("after_pruning", "after_bn_recalibration", "final"))
                lines.append(f"| Torch-Pruning BasePruner + GroupMagnitudeImportance (uniform ratio {r['ratio']:.3f}) | - | - "
                             f"| {r['macs']:.3f} | {r['params']:.3f} | {lo} | {jp} | {fmt(r['scoring_s'])} | {fmt(r['total_s'], 0)} |")
                continue
            rep = r["report"]
            ev = rep["eval"]
            spec_j = next(s for s in ev if s.endswith("jpeg75"))
            spec_l = next(s for s in ev if s.endswith("lossless"))
            stages = ("after_pruning", "after_bn_recalibration", "final")
            lo = " / ".join(fmt(ev[spec_l][s], 2) for s in stages)
            jp = " / ".join(fmt(ev[spec_j][s], 2) for s in stages)
            rec = rep.get("recover", "none")
            scoring = fmt(r["scoring_s"]) + (f" (+{r['recover_s']:.1f} recover)" if r.get("recover_s") else "")
            lines.append(f"| {c} | {rep['normalize']} | {rep['schedule']} / {rec} | {rep['ratios']['macs']:.3f} "
                         f"| {rep['ratios']['params']:.3f} | {lo} | {jp} | {scoring} | {fmt(r['total_s'], 0)} |")
        lines.append("")
    lines += ["### Scoring time: passive operator_norm vs active criteria (interleaved, same calibration batches)", "",
              "| model | images | operator_norm s | fisher s | taylor s | fisher / operator_norm | taylor / operator_norm |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in models:
        r = load(f"timing:{m}")
        if r is None:
            continue
        md = r["median_s"]
        lines.append(f"| {m} | {r['images']} | {md['operator_norm']:.3f} | {md['fisher']:.3f} | {md['taylor']:.3f} "
                     f"| {md['fisher'] / md['operator_norm']:.1f}x | {md['taylor'] / md['operator_norm']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--criteria", default="all", help="comma-separated registered names, or all")
    ap.add_argument("--iterations", type=int, default=200, help="fine-tuning iterations (the same for every row)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--timing-repeats", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dk-cifar-criteria"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cifar_criteria.md")
    ap.add_argument("--render", action="store_true", help="only write the table from the runs finished in --work")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.one:
        one(args.one, args)
        return
    from deploykit.importance import CRITERIA

    (args.work / "logs").mkdir(exist_ok=True)
    models = args.models.split(",")
    criteria = CRITERIA.names() if args.criteria == "all" else args.criteria.split(",")
    t = time.perf_counter()
    todo = [] if args.render else jobs(models, criteria)
    with ThreadPoolExecutor(args.workers) as pool:
        done = list(pool.map(lambda j: launch(j, args), todo))
    wall = time.perf_counter() - t
    failed = [j for j, rc, _ in done if rc]
    cmd = " ".join(["python", "benchmarks/cifar_criteria.py", *sys.argv[1:]])
    epochs = args.iterations * args.batch_size / TRAIN_IMAGES
    head = [
        "# Every criterion on the same work: CIFAR ResNets at half the MACs",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, {platform.python_version()}, "
        f"{args.workers} runs at a time with {args.threads} torch thread(s) each  ",
        f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; wall time of this invocation "
        f"{wall / 60:.0f} min (runs already in --work are not repeated)" + (f"; failed: {', '.join(failed)}" if failed else ""),
        "",
        f"Target: MACs ≤ {TARGET} × base. Budget, identical for every row: {args.iterations} iterations of batch "
        f"{args.batch_size} ({epochs:.3f} epoch of the 50k JPEG75 training set), SGD nesterov 0.9, lr 0.01 cosine, "
        "weight decay 5e-4, crop + flip, no distillation, seed 0. Calibration: 8 batches of 64 JPEG75 training images; "
        "BatchNorm recalibration: 20 batches of 128. Each criterion runs with its own defaults (normalization, "
        "schedule, recovery step) as `deploykit compress --criterion NAME` would. Top-1 in percent; 'pruned' is "
        "right after removal (after the recovery step where there is one).",
        "",
        "",
    ]
    text = "\n".join(head) + table(args, models, criteria, wall) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
