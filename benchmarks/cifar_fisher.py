"""CIFAR ResNet-56 and ResNet-20: deploykit's Group Fisher against Torch-Pruning at the same MACs.

Every row is pruned to the same MACs target, then fine-tuned by the same loop
(deploykit's Trainer over the same deterministic batches of the 50k JPEG75 train
set, SGD nesterov, cosine learning rate, one fixed budget) with or without
distillation from the unpruned model. Top-1 is measured on the lossless test 1k
and the JPEG75 test 10k after pruning, after BatchNorm recalibration and after the
budget; latency is ONNX Runtime p50 at batch 1 on one thread, each pruned model
interleaved with its base model.

Rows:
  fisher-*     deploykit.compress: Group Fisher with memory / flops / no normalization,
               progressive (remove channels while fine-tuning) or one-shot; residual
               (option-A) channels are prunable through deploykit's graph. ``-rt8``:
               every width a multiple of 8 (--round-to 8), for ONNX Runtime's kernels.
  l1           deploykit.compress with the l1 criterion (one-shot, global ranking).
  tp-mag/taylor Torch-Pruning 1.6's BasePruner with GroupMagnitudeImportance(p=2) /
               GroupTaylorImportance, per-layer ratio found by bisection to the MACs target;
               block-internal channels only (its graph cannot prune the option-A
               residual streams: the pruned model fails at forward).

Results are cached per row in WORK/results.json (a rerun skips finished rows) and the
markdown table is rewritten after every row.

Example:
  .venv/bin/python benchmarks/cifar_fisher.py --data ../shared/data --budget 0.1 \\
      --out benchmarks/results/cifar_fisher.md --work /tmp/cifar_fisher
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import deploykit  # noqa: E402
from deploykit.bench.latency import bench_onnx  # noqa: E402
from deploykit.data import batches, load_dataset  # noqa: E402
from deploykit.graph.costs import measure  # noqa: E402
from deploykit.train.loop import Trainer, TrainConfig, cosine_lr, evaluate, recalibrate_bn  # noqa: E402
from deploykit.train.stream import BatchStream  # noqa: E402
from deploykit.zoo import build_model  # noqa: E402
from deploykit.zoo.base import BuiltModel  # noqa: E402

BATCH, LR, CALIB_BATCHES, INTERVAL, PRUNE_WITHIN, LAT_RUNS = 64, 0.01, 8, 2, 0.5, 300


@dataclass(frozen=True)
class Row:
    """One method: ``kind`` deploykit or tp."""

    name: str
    kind: str
    kd: bool
    criterion: str = "fisher"
    normalize: str | None = None
    schedule: str = "oneshot"
    tp_importance: str | None = None
    round_to: int = 1


ROWS = [
    Row("fisher-memory-progressive", "deploykit", True, normalize="memory", schedule="progressive"),
    Row("fisher-memory-progressive", "deploykit", False, normalize="memory", schedule="progressive"),
    Row("fisher-memory-progressive-rt8", "deploykit", True, normalize="memory", schedule="progressive", round_to=8),
    Row("fisher-memory-oneshot", "deploykit", True, normalize="memory"),
    Row("fisher-memory-oneshot", "deploykit", False, normalize="memory"),
    Row("fisher-flops-progressive", "deploykit", True, normalize="flops", schedule="progressive"),
    Row("fisher-none-progressive", "deploykit", True, normalize="none", schedule="progressive"),
    Row("l1-oneshot", "deploykit", True, criterion="l1"),
    Row("tp-magnitude-l2", "tp", True, tp_importance="magnitude"),
    Row("tp-magnitude-l2", "tp", False, tp_importance="magnitude"),
    Row("tp-taylor", "tp", True, tp_importance="taylor"),
    Row("tp-taylor", "tp", False, tp_importance="taylor"),
]
# At 0.35 MACs the question is how close fisher-memory stays to the base; fewer rows keep the table in budget.
ROWS_035 = {("fisher-memory-progressive", True), ("fisher-memory-oneshot", True), ("tp-magnitude-l2", True),
            ("tp-taylor", True)}


def row_id(model: str, target: float, row: Row) -> str:
    return f"{model}@{target}:{row.name}:{'kd' if row.kd else 'ce'}"


class Bench:
    """Shared state: data, base models, ONNX files, the results cache."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cifar = Path(args.data) / "cifar10"
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.cache = self.work / "results.json"
        self.results: dict = json.loads(self.cache.read_text()) if self.cache.is_file() else {}
        self.train_spec = f"cifar10:{self.cifar}:train:jpeg75"
        self.test_specs = {"lossless_1k": f"cifar10:{self.cifar}:test:lossless", "jpeg_10k": f"cifar10:{self.cifar}:test:jpeg75"}
        self.train = load_dataset(self.train_spec)
        self.tests = {k: load_dataset(s) for k, s in self.test_specs.items()}

    def weights(self, model: str) -> str:
        return str(sorted((Path(self.args.data) / "weights").glob(f"{model}-*.th"))[0])

    def save(self) -> None:
        tmp = self.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        tmp.replace(self.cache)

    def iterations(self) -> int:
        return max(1, round(self.args.budget * (len(self.train) // BATCH)))

    # -- base --------------------------------------------------------------------------------------
    def base(self, model: str) -> dict:
        key = f"{model}:base"
        if key not in self.results:
            built = build_model(f"cifar:{model}", weights=self.weights(model))
            costs = measure(built.model, built.example_input())
            top1 = {k: evaluate(built.model, ds, built.preprocess) for k, ds in self.tests.items()}
            deploykit.export_onnx(built, self.work / f"{model}-base.onnx")
            self.results[key] = {"costs": costs.to_dict(), "top1": top1}
            self.save()
        return self.results[key]

    def latency_ratio(self, model: str, onnx: Path) -> float:
        base = self.work / f"{model}-base.onnx"
        res = bench_onnx([base, onnx], [1], runs=LAT_RUNS, warmup=30, threads=1)
        p50 = {r.model: r.p50_ms for r in res}
        return p50[str(onnx)] / p50[str(base)]

    # -- rows --------------------------------------------------------------------------------------
    def run(self, model: str, target: float, row: Row) -> None:
        rid = row_id(model, target, row)
        if rid in self.results:
            return
        print(f"[{time.strftime('%H:%M:%S')}] {rid}", flush=True)
        t0 = time.perf_counter()
        res = (self._deploykit if row.kind == "deploykit" else self._tp)(model, target, row)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["row"] = asdict(row)
        self.results[rid] = res
        self.save()
        print(f"    {json.dumps({k: res[k] for k in ('macs_ratio', 'top1', 'latency_ratio', 'seconds')})}", flush=True)

    def _deploykit(self, model: str, target: float, row: Row) -> dict:
        out = self.work / row_id(model, target, row).replace(":", "_").replace("@", "_")
        rep = deploykit.compress(
            model=f"cifar:{model}", weights=self.weights(model), out=str(out), force=True, target_macs=target,
            criterion=row.criterion, normalize=row.normalize, schedule=row.schedule, interval=INTERVAL, round_to=row.round_to,
            prune_within=PRUNE_WITHIN, data=self.train_spec, eval_data=[self.test_specs["lossless_1k"]],
            calib_batches=CALIB_BATCHES, batch_size=BATCH, finetune_epochs=self.args.budget, lr=LR, kd=row.kd,
            evaluate_base=False, seed=0,
        )
        onnx = out.with_suffix(".onnx")
        deploykit.export_onnx(deploykit.load(str(out)), onnx)
        ev = rep["eval"]
        top1 = {k: {stage: ev[spec][stage] for stage in ("after_pruning", "after_bn_recalibration", "final")}
                for k, spec in self.test_specs.items()}
        return {"macs_ratio": rep["ratios"]["macs"], "params_ratio": rep["ratios"]["params"],
                "memory_ratio": rep["ratios"]["activation_bytes"], "costs": rep["pruned"], "top1": top1,
                "latency_ratio": self.latency_ratio(model, onnx), "iterations": rep["iterations"],
                "channels_removed": rep["channels_removed"]}

    def _tp(self, model: str, target: float, row: Row) -> dict:
        import torch_pruning as tp

        built = build_model(f"cifar:{model}", weights=self.weights(model))
        net, pre, example = built.model, built.preprocess, built.example_input()
        base_macs = measure(net, example).macs

        def prune(m: nn.Module, ratio: float, importance) -> nn.Module:
            # Only block-internal channels: the roots of the residual (option-A) groups are ignored.
            ignored = [mod for name, mod in m.named_modules()
                       if isinstance(mod, (nn.Conv2d, nn.Linear)) and not re.fullmatch(r"layer\d\.\d+\.conv1", name)]
            pruner = tp.pruner.BasePruner(m, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored,
                                          global_pruning=False)
            pruner.step()
            return m

        # A per-layer ratio fixes every layer's width whatever the importance: bisect it once, cheaply.
        lo, hi = 0.0, 0.95
        for _ in range(10):
            mid = (lo + hi) / 2
            pruned = prune(copy.deepcopy(net), mid, tp.importance.GroupMagnitudeImportance(p=2))
            if measure(pruned, example).macs <= target * base_macs:
                hi = mid
            else:
                lo = mid
        if row.tp_importance == "taylor":
            imp = tp.importance.GroupTaylorImportance()
            net.eval()
            net.zero_grad()
            # The same calibration batches the one-shot Fisher rows score on.
            for x, y in batches(self.train, pre, BATCH, shuffle=True, seed=0, limit=CALIB_BATCHES):
                torch.nn.functional.cross_entropy(net(x), y).backward()
        else:
            imp = tp.importance.GroupMagnitudeImportance(p=2)
        prune(net, hi, imp)
        net.zero_grad(set_to_none=True)
        costs = measure(net, example)
        top1: dict[str, dict[str, float]] = {k: {} for k in self.tests}
        for k, ds in self.tests.items():
            top1[k]["after_pruning"] = round(evaluate(net, ds, pre), 2)
        recalibrate_bn(net, self.train, pre)
        for k, ds in self.tests.items():
            top1[k]["after_bn_recalibration"] = round(evaluate(net, ds, pre), 2)
        total = self.iterations()
        teacher = build_model(f"cifar:{model}", weights=self.weights(model)).model if row.kd else None
        trainer = Trainer(net, TrainConfig(lr=LR, batch_size=BATCH, augment=True), teacher)
        stream = BatchStream(self.train, pre, BATCH, seed=0, augment=True)
        for it in range(total):  # exactly what the one-shot schedule does after pruning
            trainer.step(*stream.batch(it), lr=cosine_lr(it, total, LR))
        for k, ds in self.tests.items():
            top1[k]["final"] = round(evaluate(net, ds, pre), 2)
        onnx = self.work / (row_id(model, target, row).replace(":", "_").replace("@", "_") + ".onnx")
        deploykit.export_onnx(BuiltModel(model=net.eval(), spec=f"tp:{model}", input_shape=built.input_shape, preprocess=pre), onnx)
        base = measure(build_model(f"cifar:{model}", pretrained=False).model, example)
        ratio = costs.ratio(base)
        return {"macs_ratio": round(ratio["macs"], 4), "params_ratio": round(ratio["params"], 4),
                "memory_ratio": round(ratio["activation_bytes"], 4), "costs": costs.to_dict(), "top1": top1,
                "latency_ratio": self.latency_ratio(model, onnx), "iterations": {"budget": total, "pruning": 0, "done": total},
                "tp_pruning_ratio": round(hi, 4)}


def render(bench: Bench, models: list[str], targets: list[float], wall: float | None) -> str:
    a = bench.args
    it = bench.iterations()
    lines = [
        "# CIFAR ResNet-56 / ResNet-20: Group Fisher (deploykit) vs Torch-Pruning at the same MACs",
        "",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`",
        "",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch thread(s) on a 2-core machine shared with other "
        f"work; torch {torch.__version__}, torch-pruning {_version('torch-pruning')}, onnxruntime {_version('onnxruntime')}, "
        f"Python {platform.python_version()}. Date: {datetime.date.today().isoformat()}."
        + (f" Wall time of the last invocation: {wall / 60:.1f} min (rows finished by earlier invocations come from the per-row cache in `--work`; each row's own time is its s column)." if wall else " (in progress)"),
        "",
        f"**Budget (every row): {a.budget} epoch of the 50k JPEG75 train set = {it} iterations at batch {BATCH}**, SGD "
        f"(momentum 0.9, nesterov, weight decay 5e-4), peak LR {LR}, cosine; random crop (pad 4) + flip; KD: "
        "(1-α)·CE + α·T²·KL, α = 0.5, T = 4, teacher = the unpruned model. BatchNorm recalibration: 20 batches of 128. "
        f"One-shot rows score on {CALIB_BATCHES} calibration batches of {BATCH}. Progressive rows remove a chunk of channels "
        f"every {INTERVAL} iterations (`--prune-within {PRUNE_WITHIN}`: each removal is sized so pruning ends within "
        f"{int(PRUNE_WITHIN * 100)}% of the budget), "
        "resetting the Fisher accumulators each time, then decay the LR by cosine over the rest; 'after pruning' for them "
        "is the moment the target is met.",
        "",
        "Top-1 columns: after pruning / after BN recalibration / after the budget. Ratios are pruned ÷ base. Latency: "
        f"ONNX Runtime CPU p50, batch 1, 1 thread, {LAT_RUNS} runs interleaved with the base model.",
        "",
    ]
    for model in models:
        base = bench.results.get(f"{model}:base")
        if base is None:
            continue
        b = base["top1"]
        lines += [f"## {model}", "",
                  f"Base: lossless 1k {b['lossless_1k']:.2f}, JPEG75 10k {b['jpeg_10k']:.2f}; "
                  f"{base['costs']['macs'] / 1e6:.1f}M MACs, {base['costs']['params'] / 1e3:.1f}k params, "
                  f"{base['costs']['activation_bytes'] / 1e6:.2f} MB activations.", "",
                  "| MACs target | method | loss | lossless 1k | JPEG75 10k | MACs | params | memory | latency | pruning its | s |",
                  "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for target in targets:
            for row in ROWS:
                r = bench.results.get(row_id(model, target, row))
                if r is None:
                    continue
                t = r["top1"]
                fmt = lambda k: " / ".join(f"{t[k][s]:.2f}" if t[k].get(s) is not None else "-"  # noqa: E731
                                           for s in ("after_pruning", "after_bn_recalibration", "final"))
                pits = r["iterations"]["pruning"]
                lines.append(f"| {target} | {row.name} | {'KD' if row.kd else 'CE'} | {fmt('lossless_1k')} | {fmt('jpeg_10k')} | "
                             f"{r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | {r['memory_ratio']:.3f} | "
                             f"{r['latency_ratio']:.3f} | {pits} | {r['seconds']:.0f} |")
        lines.append("")
    lines += _findings(bench, models, targets)
    return "\n".join(lines) + "\n"


def _findings(bench: Bench, models: list[str], targets: list[float]) -> list[str]:
    """The issue's comparisons, computed from the table (whichever way they come out)."""
    out = ["## Comparisons", ""]
    for model in models:
        for target in targets:
            for kd in (True, False):
                fm = bench.results.get(row_id(model, target, Row("fisher-memory-progressive", "deploykit", kd)))
                tps = [(row.name, bench.results.get(row_id(model, target, row))) for row in ROWS if row.kind == "tp" and row.kd == kd]
                tps = [(n, r) for n, r in tps if r is not None]
                if fm is None or not tps:
                    continue
                loss = "KD" if kd else "CE"
                for k in ("lossless_1k", "jpeg_10k"):
                    best = max(tps, key=lambda nr: nr[1]["top1"][k]["final"])
                    d = fm["top1"][k]["final"] - best[1]["top1"][k]["final"]
                    out.append(f"- {model} @ {target} MACs, {loss}, {k}: fisher-memory-progressive "
                               f"{fm['top1'][k]['final']:.2f} vs best Torch-Pruning row ({best[0]}) "
                               f"{best[1]['top1'][k]['final']:.2f}: {d:+.2f} ({'ahead' if d > 0 else 'not ahead'}).")
        base = bench.results.get(f"{model}:base")
        for target in targets:
            for kd in (True, False):
                fm = bench.results.get(row_id(model, target, Row("fisher-memory-progressive", "deploykit", kd)))
                if base and fm and target < 0.5:
                    d = fm["top1"]["lossless_1k"]["final"] - base["top1"]["lossless_1k"]
                    out.append(f"- {model} @ {target} MACs, {'KD' if kd else 'CE'}: lossless 1k {fm['top1']['lossless_1k']['final']:.2f} "
                               f"vs base {base['top1']['lossless_1k']:.2f} ({d:+.2f}; goal: within 1 point).")
    return out + [""]


def _version(pkg: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(pkg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="The shared data directory.")
    p.add_argument("--budget", type=float, default=0.1, help="Fine-tuning budget in epochs of the 50k JPEG train set.")
    p.add_argument("--models", default="resnet56,resnet20")
    p.add_argument("--targets", default="0.5,0.35")
    p.add_argument("--rows", default="", help="Comma-separated row ids to run (default: the full table).")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core machine).")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cifar_fisher.md"))
    p.add_argument("--work", default="/tmp/deploykit-cifar-fisher", help="Artifacts, ONNX files and the results cache.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    targets = [float(t) for t in args.targets.split(",")]
    bench = Bench(args)
    start = time.perf_counter()
    wanted = set(args.rows.split(",")) if args.rows else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in models:
        bench.base(model)
        for target in targets:
            for row in ROWS:
                if target < 0.5 and (row.name, row.kd) not in ROWS_035:
                    continue
                if wanted is None or row_id(model, target, row) in wanted:
                    bench.run(model, target, row)
                    out.write_text(render(bench, models, targets, None))
    out.write_text(render(bench, models, targets, time.perf_counter() - start))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
