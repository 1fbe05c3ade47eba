"""deploykit at its defaults against Torch-Pruning at its best: CIFAR ResNets, same MACs, same recipe, 3 seeds.

Cells: ResNet-20 and ResNet-56 at 0.5 and 0.35 of the MACs (``r20-macs0.5`` ...), and
ResNet-56 at an equal *measured* latency of 0.5 of the base (``r56-lat0.5``: ONNX Runtime
CPU, batch 1, 1 thread). Budgets: 1 and 3 epochs of the 50k JPEG75 training set.

Rows:
  deploykit    exactly ``deploykit compress cifar:resnetN --weights W --target-macs R
               --data cifar10:DIR:train:jpeg75 --finetune-epochs E --kd --seed S`` (the Python
               API with the same settings; only the evaluations of the base model and of the
               stages before fine-tuning are skipped, which changes nothing but time). ``dk-*`` rows: the same with one setting
               changed (the ablation of the defaults).
  tp-*         Torch-Pruning 1.6's ``BasePruner`` with ``round_to=8`` (its own option for
               fast widths), ``GroupMagnitudeImportance(p=2)`` or ``GroupTaylorImportance``
               (gradients of the cross-entropy on the same 8 calibration batches of 64 that
               deploykit's one-shot Fisher scores on), global or local ranking, and
               ``iterative_steps`` (importance re-estimated between steps, as its docs
               recommend). It is given deploykit's pruner for the option-A shortcut so it
               prunes the whole network as deploykit does. Its pruning ratio is bisected until
               the measured MACs are at most the target and as close to it as its chunks allow
               (or, for the latency cell, the measured latency ratio). The pruned model is then
               fine-tuned by deploykit's own ``compress`` with nothing left to remove
               (``--target-macs 1``), distilled from the unpruned model (``--teacher``): the
               same BatchNorm recalibration, loop, batches, augmentation, KD and seed as the
               deploykit row.
  control      the unpruned model fine-tuned by the same recipe (``--target-macs 1``).

Top-1 on the lossless 1k and the JPEG75 10k test images; MACs from deploykit's cost model
(both tools' models measured by the same code); latency: each finished model exported to
ONNX and timed against the base, interleaved, in a separate phase that runs alone.

Every row is a separate process (``--workers`` at a time, one torch thread each) and its
result is cached in ``--results`` (committed) under a key of the code version (a hash of the
deploykit package, the job code's ``JOB_VERSION``, and the torch, Torch-Pruning and ONNX Runtime
versions) and every setting; a rerun skips finished rows, so the grid may be finished over
several sessions and machines. Rows of
another code version are never mixed into a table: ``--render`` reports them as missing.

    .venv/bin/python benchmarks/headtohead.py --work /tmp/dk-h2h --cells r20-macs0.5 --epochs 1 \\
        --seeds 0,1,2 --rows deploykit,tp-mag-global,tp-taylor-global,control --workers 2
    .venv/bin/python benchmarks/headtohead.py --work /tmp/dk-h2h --render --out benchmarks/results/headtohead.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import code_version, git_commit, provenance, run_child, write_row  # noqa: E402
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
CELLS: dict[str, tuple[str, str, float]] = {
    "r20-macs0.5": ("resnet20", "macs", 0.5),
    "r20-macs0.35": ("resnet20", "macs", 0.35),
    "r56-macs0.5": ("resnet56", "macs", 0.5),
    "r56-macs0.35": ("resnet56", "macs", 0.35),
    "r56-lat0.5": ("resnet56", "latency", 0.5),
    # Below both tools' latency at half the MACs (deploykit 0.73, Torch-Pruning 0.83): the trade at equal latency.
    "r20-lat0.7": ("resnet20", "latency", 0.7),
}
TP_ROUND_TO = 8
MACS_TOLERANCE = 0.005  # both sides at the same MACs within this (the bound)
CALIB_BATCHES, BATCH = 8, 64  # deploykit's defaults: the calibration Taylor scores on
# Final timings: up to 3000 rounds in 30 s; Torch-Pruning's search: deploykit's check defaults (1000 in 8 s).
LAT_RUNS, LAT_BUDGET_S, LAT_WARMUP = 3000, 30.0, 30
SEARCH_RUNS, SEARCH_BUDGET_S = 1000, 8.0
LATENCY_METHOD = "fastest-block"
TP_ENV = "DK_H2H_TP_HISTORY"


@dataclass(frozen=True)
class Row:
    """One method. ``kind``: deploykit (CLI defaults + ``args``), tp, or control."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    importance: str = ""
    global_pruning: bool = False
    steps: int = 1
    note: str = ""


ROWS: dict[str, Row] = {
    "deploykit": Row("deploykit", note="the defaults"),
    "control": Row("control", note="unpruned, same fine-tuning"),
    **{f"tp-{imp}-{scope}{'' if steps == 1 else f'-it{steps}'}": Row("tp", importance=imp, global_pruning=scope == "global",
                                                                    steps=steps)
       for imp in ("mag", "taylor") for scope in ("global", "local") for steps in (1, 5)},
    # Ablation of deploykit's defaults: one setting changed each.
    "dk-norm-flops": Row("deploykit", {"normalize": "flops"}),
    "dk-norm-none": Row("deploykit", {"normalize": "none"}),
    "dk-norm-params": Row("deploykit", {"normalize": "params"}),
    "dk-norm-latency": Row("deploykit", {"normalize": "latency"}),
    "dk-l1": Row("deploykit", {"criterion": "l1"}),
    "dk-l2": Row("deploykit", {"criterion": "l2"}),
    "dk-taylor": Row("deploykit", {"criterion": "taylor"}),
    "dk-calib32": Row("deploykit", {"calib_batches": 32}),
    "dk-progressive": Row("deploykit", {"schedule": "progressive", "prune_within": 0.5}),
    "dk-progressive-flops": Row("deploykit", {"schedule": "progressive", "prune_within": 0.5, "normalize": "flops"}),
    "dk-rt1": Row("deploykit", {"round_to": 1}),
    "dk-rt16": Row("deploykit", {"round_to": 16}),
    "dk-rt16-8": Row("deploykit", {"round_to": "16:8"}),
    "dk-kd0.9": Row("deploykit", {"kd_alpha": 0.9}),
    "dk-lr0.02": Row("deploykit", {"lr": 0.02}),
}


# Bumped by hand whenever what a row computes changes (the job functions below); the table code is not hashed,
# so improving the rendering does not throw the finished rows away.
JOB_VERSION = 2  # 2: latency read as each side's fastest block median (deploykit's LatencyCheck), was the p50


@dataclass(frozen=True)
class Job:
    """One row of the grid: a method on a cell, at a budget, with a seed."""

    row: str
    cell: str
    epochs: float
    seed: int

    def settings(self, version: str) -> dict[str, Any]:
        return {"job": asdict(self), "row": asdict(ROWS[self.row]), "cell": CELLS[self.cell], "version": version}

    def key(self, version: str) -> str:
        digest = hashlib.sha256(json.dumps(self.settings(version), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.cell}_e{self.epochs:g}_s{self.seed}_{self.row}_{digest}"


# -- one job, in its own process -----------------------------------------------------------------------------------


def _specs(data: Path) -> tuple[str, str, str]:
    cifar = data / "cifar10"
    return f"cifar10:{cifar}:train:jpeg75", f"cifar10:{cifar}:test:jpeg75", f"cifar10:{cifar}:test:lossless"


def _weights(data: Path, model: str) -> str:
    return str(data / "weights" / WEIGHTS[model])


def _summary(report: dict[str, Any], data: Path) -> dict[str, Any]:
    _, jpeg, lossless = _specs(data)
    ev = report["eval"]
    return {"top1": {"jpeg_10k": ev[jpeg]["final"], "lossless_1k": ev[lossless]["final"]},
            "stages": {"jpeg_10k": ev[jpeg], "lossless_1k": ev[lossless]},
            "macs": report["ratios"]["macs"], "params": report["ratios"]["params"],
            "memory": report["ratios"]["activation_bytes"], "seconds": report.get("seconds")}


def _compress(job: Job, out: Path, data: Path, model_spec: str, weights: str, targets: dict[str, float],
              **extra: Any) -> dict[str, Any]:
    import deploykit

    train, _, lossless = _specs(data)
    return deploykit.compress(model=model_spec, weights=weights, out=str(out), force=True, data=train,
                              eval_data=[lossless], finetune_epochs=job.epochs, kd=True, seed=job.seed,
                              evaluate_base=False, evaluate_stages=False, **{f"target_{k}": v for k, v in targets.items()}, **extra)


def run_deploykit(job: Job, work: Path, data: Path) -> dict[str, Any]:
    model, kind, target = CELLS[job.cell]
    row = ROWS[job.row]
    out = work / "artifacts" / job.key(VERSION)
    targets = {"macs": 1.0} if row.kind == "control" else {kind: target}
    extra = {"criterion": "l1"} if row.kind == "control" else dict(row.args)  # nothing to rank in the control
    report = _compress(job, out, data, f"cifar:{model}", _weights(data, model), targets, **extra)
    return {**_summary(report, data), "artifact": str(out)}


def _tp_prune(model: str, importance: str, global_pruning: bool, steps: int, ratio: float, calib: list, seed: int):
    """A copy of the pretrained model pruned by Torch-Pruning at ``ratio``; returns (model, history)."""
    import torch
    import torch_pruning as tp

    from deploykit.graph.pruners import customized_pruners
    from deploykit.zoo import build_model

    built = build_model(f"cifar:{model}", weights=_weights(DATA, model))
    net, example = built.model.eval(), built.example_input()
    imp = tp.importance.GroupTaylorImportance() if importance == "taylor" else tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.BasePruner(net, example, importance=imp, pruning_ratio=ratio, iterative_steps=steps,
                                  global_pruning=global_pruning, round_to=TP_ROUND_TO, ignored_layers=[net.linear],
                                  customized_pruners=customized_pruners())
    for _ in range(steps):
        if importance == "taylor":
            net.zero_grad()
            for x, y in calib:
                torch.nn.functional.cross_entropy(net(x), y).backward()
        pruner.step()
    net.zero_grad(set_to_none=True)
    return net, example, [list(h) for h in pruner.pruning_history()]


def tp_pruned():
    """Factory for ``compress``: the CIFAR ResNet with a Torch-Pruning history (``$DK_H2H_TP_HISTORY``) replayed."""
    import torch_pruning as tp

    from deploykit.graph.pruners import customized_pruners
    from deploykit.zoo import build_model

    doc = json.loads(Path(os.environ[TP_ENV]).read_text())
    built = build_model(f"cifar:{doc['model']}", pretrained=False)
    net, example = built.model.eval(), built.example_input()
    dg = tp.DependencyGraph().build_dependency(net, example, customized_pruners=customized_pruners())
    dg.load_pruning_history([tuple(h) for h in doc["history"]])
    return net


tp_pruned.input_shape = (1, 3, 32, 32)  # a factory's declared input: the CIFAR preprocessing (32x32, ImageNet mean/std)


def run_tp(job: Job, work: Path, data: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from deploykit.data import batches, load_dataset
    from deploykit.graph.costs import measure
    from deploykit.zoo import build_model

    model, kind, target = CELLS[job.cell]
    row = ROWS[job.row]
    torch.manual_seed(job.seed)
    train_spec, _, _ = _specs(data)
    base = build_model(f"cifar:{model}", weights=_weights(data, model))
    pre = base.preprocess
    calib = list(batches(load_dataset(train_spec), pre, BATCH, shuffle=True, seed=job.seed, limit=CALIB_BATCHES))
    base_macs = measure(base.model, base.example_input()).macs

    def cost(ratio: float) -> tuple[float, Any]:
        net, example, hist = _tp_prune(model, row.importance, row.global_pruning, row.steps, ratio, calib, job.seed)
        if kind == "macs":
            return measure(net, example).macs / base_macs, (net, hist)
        return _latency_ratio(base.model, net, example, SEARCH_RUNS, SEARCH_BUDGET_S), (net, hist)

    # The largest ratio whose cost is over the target is lo; the smallest meeting it is hi.
    lo, hi, best = 0.0, 0.95, None
    for _ in range(14 if kind == "macs" else 9):
        mid = (lo + hi) / 2
        c, found = cost(mid)
        if c <= target:
            hi, best = mid, (c, found)
        else:
            lo = mid
    if kind == "macs" and (best is None or best[0] < target - MACS_TOLERANCE):
        # With global Taylor scores Torch-Pruning's ratio -> MACs is not monotone (ResNet-20, seed 0: ratio 0.42
        # gives 0.522 of the MACs, 0.475 gives 0.433), so bisection can miss the target or undershoot it: scan a
        # grid and keep the ratio whose MACs come closest to the target from below. Rows bisection placed within
        # the tolerance are computed exactly as before.
        for r in (0.05 + 0.0125 * i for i in range(69)):
            c, found = cost(r)
            if c <= target and (best is None or c > best[0]):
                hi, best = r, (c, found)
    if best is None:  # a failure of the method, not a row: the table shows it missing and the README says why
        raise RuntimeError(f"Torch-Pruning reached no ratio at or below {target} of the {kind}")
    achieved, (net, hist) = best
    tp_dir = work / "tp" / job.key(VERSION)
    tp_dir.mkdir(parents=True, exist_ok=True)
    (tp_dir / "history.json").write_text(json.dumps({"model": model, "history": hist}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tp_dir / "pruned.safetensors"))
    os.environ[TP_ENV] = str(tp_dir / "history.json")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    out = work / "artifacts" / job.key(VERSION)
    report = _compress(job, out, data, "headtohead:tp_pruned", str(tp_dir / "pruned.safetensors"),
                       {"macs": 1.0}, criterion="l1", teacher=f"cifar:{model}",
                       teacher_weights=_weights(data, model))
    summary = _summary(report, data)
    # compress measured its ratios against the already pruned model: restate them against the base.
    pruned = measure(net, base.example_input())
    base_costs = measure(base.model, base.example_input())
    r = pruned.ratio(base_costs)
    summary.update(macs=r["macs"], params=r["params"], memory=r["activation_bytes"], tp_ratio=round(hi, 5),
                   tp_search_cost=achieved, artifact=str(out))
    return summary


def _latency_ratio(base_net, net, example, runs: int, budget_s: float) -> float:
    """``net``'s latency over ``base_net``'s as deploykit's own checks measure it (ONNX Runtime CPU, batch 1,
    1 thread, interleaved; each side's fastest median over blocks of 100 consecutive rounds): both tools'
    models, the search and the final timing read by one estimator."""
    from deploykit.bench.latency_check import LatencyCheck
    from deploykit.bench.latency_table.timers import TimingConfig, get_timer

    timer = get_timer("ort", TimingConfig(batch=1, threads=1))
    check = LatencyCheck(timer, timer.model_fn(base_net.eval(), example), example, runs=runs, budget_s=budget_s,
                         warmup=LAT_WARMUP)
    return check.ratio(net.eval())


def time_artifact(job: Job, work: Path, data: Path, result: dict[str, Any]) -> float:
    """Measured latency ratio (ONNX Runtime CPU, batch 1, 1 thread) of a finished row against its base."""
    import deploykit
    from deploykit.zoo import build_model

    model = CELLS[job.cell][0]
    if ROWS[job.row].kind == "tp":
        os.environ[TP_ENV] = str(work / "tp" / job.key(VERSION) / "history.json")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    base = build_model(f"cifar:{model}", weights=_weights(data, model))
    pruned = deploykit.load(result["artifact"], trust_factory=True)
    return _latency_ratio(base.model, pruned.model, base.example_input(), LAT_RUNS, LAT_BUDGET_S)


RUNNERS = {"deploykit": run_deploykit, "control": run_deploykit, "tp": run_tp}


def one(job: Job, work: Path, data: Path, phase: str) -> None:
    """Run a job (or its timing) in this process and write its result file."""
    import torch

    import deploykit

    assert Path(deploykit.__file__).resolve().is_relative_to(ROOT), f"{deploykit.__file__} is not this checkout's"
    torch.set_num_threads(1)
    path = result_path(work, job)
    if phase == "train":
        t0 = time.perf_counter()
        res = RUNNERS[ROWS[job.row].kind](job, work, data)
        res.update(seconds_total=round(time.perf_counter() - t0, 1), settings=job.settings(VERSION), commit=git_commit(),
                   finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    else:
        res = json.loads(path.read_text())
        res["latency"] = round(time_artifact(job, work, data, res), 4)
        res["latency_method"] = LATENCY_METHOD
    write_row(path, res)


def result_path(work: Path, job: Job) -> Path:
    """Rows live in the repository (``--results``), so a grid can span sessions and machines; artifacts in ``work``."""
    return RESULTS / f"{job.key(VERSION)}.json"


def load_result(work: Path, job: Job, version: str | None = None) -> dict[str, Any] | None:
    p = RESULTS / f"{job.key(version)}.json" if version else result_path(work, job)
    return json.loads(p.read_text()) if p.is_file() else None


def section_versions(args: argparse.Namespace) -> dict[tuple[str, float], str]:
    """The code version each (cell, budget) is read at: the first of ``--code-version``'s list with any of
    its rows, so a section never mixes rows of two versions (the first version where none has any)."""
    versions = READ_VERSIONS or [VERSION]
    out = {}
    for cell in args.cells.split(","):
        for e in args.epochs.split(","):
            jobs = [Job(row, cell, float(e), int(sd)) for row in args.rows.split(",") for sd in args.seeds.split(",")]
            out[(cell, float(e))] = next((v for v in versions if any((RESULTS / f"{j.key(v)}.json").is_file()
                                                                     for j in jobs)), versions[0])
    return out


def grid_results(args: argparse.Namespace, at: dict[tuple[str, float], str]) -> dict[Job, dict[str, Any] | None]:
    """Every job of the grid with its row (None where missing), each section at its version in ``at``
    (:func:`section_versions`)."""
    return {j: load_result(Path(args.work), j, at[(j.cell, j.epochs)]) for j in grid(args)}


# -- the grid ------------------------------------------------------------------------------------------------------


def launch(job: Job, args: argparse.Namespace, phase: str) -> tuple[Job, int, float]:
    t0 = time.perf_counter()
    log = Path(args.work) / "logs" / f"{job.key(VERSION)}.{phase}.log"
    rc = run_child([__file__, "--job", json.dumps(asdict(job)), "--phase", phase, "--work", args.work, "--data",
                    str(args.data), "--results", str(RESULTS)], log, env={"DEPLOYKIT_CACHE": args.cache} if args.cache else None)
    return job, rc, time.perf_counter() - t0


def grid(args: argparse.Namespace) -> list[Job]:
    return [Job(row, cell, float(e), int(s)) for cell in args.cells.split(",") for e in args.epochs.split(",")
            for row in args.rows.split(",") for s in args.seeds.split(",")]


def run_grid(args: argparse.Namespace) -> None:
    work = Path(args.work)
    jobs = [j for j in grid(args) if load_result(work, j) is None]
    # Latency cells time models while they prune: they run alone, after the rest.
    shared, alone = [j for j in jobs if CELLS[j.cell][1] != "latency"], [j for j in jobs if CELLS[j.cell][1] == "latency"]
    print(f"code version {VERSION} ({git_commit()}): {len(jobs)} rows to run", flush=True)
    for batch, workers in ((shared, args.workers), (alone, 1)):
        with ThreadPoolExecutor(workers) as pool:
            for job, rc, s in pool.map(lambda j: launch(j, args, "train"), batch):
                print(f"[{time.strftime('%H:%M:%S')}] {job.key(VERSION)}: {'ok' if rc == 0 else f'FAILED rc={rc}'} "
                      f"({s / 60:.1f} min)", flush=True)
    # Timing runs alone: nothing else loads the machine while a latency is measured.
    for job in grid(args):
        res = load_result(work, job)
        # A row finished in another session has its artifact there: it keeps no latency rather than a wrong one.
        if res is not None and "latency" not in res and Path(res["artifact"]).is_dir():
            _, rc, _ = launch(job, args, "time")
            print(f"[{time.strftime('%H:%M:%S')}] timed {job.key(VERSION)}: {'ok' if rc == 0 else f'FAILED rc={rc}'}",
                  flush=True)


# -- the table -----------------------------------------------------------------------------------------------------


def _ms(values: list[float], nd: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{nd}f}"
    return f"{statistics.mean(values):.{nd}f} ± {statistics.stdev(values):.{nd}f}"


def _row_commits(results: Any) -> str:
    """Where rows of a pinned code version were computed, for a table rendered from another checkout."""
    commits = sorted({r["commit"] for r in results if r})
    return f"rows computed at commit {', '.join(commits) or 'none yet'}; table rendered at commit {git_commit()}"


def plot(args: argparse.Namespace, path: Path) -> None:
    """Top-1 against measured latency ratio for the finished rows of ``--cells``: one panel per test set, a
    colour per tool, a marker per budget, error bars of one std over seeds, each tool's Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"deploykit": "tab:blue", "tp": "tab:orange", "control": "tab:gray"}
    markers = {1.0: "o", 3.0: "s"}
    points: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    at = section_versions(args)
    for job, res in grid_results(args, at).items():
        if res is None or "latency" not in res:
            continue
        points.setdefault((job.row, job.epochs, job.cell), []).append(res)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for ax, (key, title) in zip(axes, (("lossless_1k", "lossless 1k"), ("jpeg_10k", "JPEG75 10k"))):
        fronts: dict[tuple[str, float], list[tuple[float, float]]] = {}
        for (row, epochs, cell), rs in sorted(points.items()):
            kind = ROWS[row].kind
            lat = [r["latency"] for r in rs]
            top = [r["top1"][key] for r in rs]
            x, y = statistics.mean(lat), statistics.mean(top)
            sx, sy = (statistics.stdev(lat), statistics.stdev(top)) if len(rs) > 1 else (0.0, 0.0)
            ax.errorbar(x, y, xerr=sx, yerr=sy, fmt=markers.get(epochs, "^"), color=colours[kind], capsize=2,
                        alpha=1.0 if row in ("deploykit", "control") else 0.6)
            ax.annotate(f"{row} {cell.split('-', 1)[1]}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            fronts.setdefault((kind, epochs), []).append((x, y))
        for (kind, epochs), pts in fronts.items():
            front, best = [], float("-inf")
            for x, y in sorted(pts):  # a point is on the front when nothing faster is as accurate
                if y > best:
                    front.append((x, y))
                    best = y
            if kind != "control" and len(front) > 1:
                ax.plot(*zip(*front), color=colours[kind], lw=1, ls="-" if epochs == 1.0 else "--")
        ax.set_title(f"top-1, {title}")
        ax.set_xlabel("latency ratio to the base (ONNX Runtime CPU, batch 1, 1 thread)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=k) for k, c in colours.items()]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=f"{e:g} epoch(s)") for e, m in markers.items()]
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(f"{', '.join(sorted({CELLS[c][0] for c in args.cells.split(',')}))}: deploykit (defaults, blue) "
                 f"vs Torch-Pruning (orange), mean ± std over seeds {args.seeds}; "
                 f"code version {', '.join(sorted(set(at.values())))}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _method_text(methods: set[str]) -> str:
    """How the rows' latencies were read (rows of job version 1 carry no method: the p50)."""
    if methods == {LATENCY_METHOD}:
        return (f"each side's fastest median over blocks of 100 consecutive rounds, up to {LAT_RUNS} rounds in "
                f"{LAT_BUDGET_S:.0f} s (deploykit's LatencyCheck; Torch-Pruning's search reads latency the same way).")
    if methods <= {"p50"}:
        return "p50 of 300 runs (job version 1)."
    return f"mixed methods {sorted(methods)}."


def render(args: argparse.Namespace) -> str:
    at = section_versions(args)
    results = grid_results(args, at)
    jobs = list(results)
    several = len(set(at.values())) > 1
    missing = [j for j, r in results.items() if r is None]
    rows = args.rows.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = {r.get("latency_method", "p50") for r in results.values() if r is not None and "latency" in r}
    lines = [
        "# deploykit (defaults) vs Torch-Pruning (best settings): CIFAR ResNets at equal MACs / latency",
        "",
        *provenance(" ".join([".venv/bin/python", "benchmarks/headtohead.py", *sys.argv[1:]]),
                    " and ".join(dict.fromkeys(at.values())) + (", one per section as named" if several else ""),
                    _row_commits(results.values()) if args.code_version else None),
        "One torch thread per row, `--workers` rows at a time, on a machine other jobs may share: latency is "
        "interleaved with the base in the same process, so load largely cancels in the ratio, but not entirely.",
        "",
        "Recipe (every row): KD from the unpruned model ((1-α)·CE + α·T²·KL, α 0.5, T 4), SGD nesterov momentum 0.9, "
        "peak LR 0.01 cosine, weight decay 5e-4, batch 64, random crop + flip, BatchNorm recalibration on 20 batches "
        "after pruning; the 50k JPEG75 training set. Top-1: lossless 1k / JPEG75 10k test images, mean ± std over "
        f"seeds {', '.join(map(str, seeds))}. Δ: the paired difference deploykit − row per seed (mean ± std). MACs and "
        "latency: ratios to the base model; latency is ONNX Runtime CPU, batch 1, 1 thread, interleaved with the base: "
        + _method_text(methods),
        "",
    ]
    if missing:
        lines += [f"**Partial table: {len(missing)} of {len(jobs)} rows are missing** (not run yet at this code version).", ""]
    for cell in args.cells.split(","):
        model, kind, target = CELLS[cell]
        for e in args.epochs.split(","):
            version = f" (code version {at[(cell, float(e))]})" if several else ""
            lines += [f"## {model}, {kind} {target}, {float(e):g} epoch(s){version}", ""]
            if several:
                here = {r.get("latency_method", "p50") for j, r in results.items()
                        if r is not None and "latency" in r and (j.cell, j.epochs) == (cell, float(e))}
                lines += [f"Latency: {_method_text(here)}", ""] if here else []
            lines += ["| row | lossless 1k | JPEG75 10k | Δ lossless | Δ JPEG | MACs | latency | seeds |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            ref = {s: results.get(Job("deploykit", cell, float(e), s)) for s in seeds}
            for row in rows:
                got = {s: results.get(Job(row, cell, float(e), s)) for s in seeds}
                done = {s: r for s, r in got.items() if r is not None}
                if not done:
                    lines.append(f"| {row} | missing | | | | | | 0 |")
                    continue

                def col(key: str, rs=done) -> list[float]:
                    return [r["top1"][key] for r in rs.values()]

                def delta(key: str) -> str:
                    pairs = [ref[s]["top1"][key] - r["top1"][key] for s, r in done.items() if ref.get(s)]
                    return "-" if row == "deploykit" or not pairs else _ms(pairs)

                lat = [r["latency"] for r in done.values() if "latency" in r]
                lines.append(f"| {row} | {_ms(col('lossless_1k'))} | {_ms(col('jpeg_10k'))} | {delta('lossless_1k')} | "
                             f"{delta('jpeg_10k')} | {_ms([r['macs'] for r in done.values()], 3)} | {_ms(lat, 3)} | {len(done)} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    global DATA, RESULTS, VERSION, READ_VERSIONS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--work", default="/tmp/dk-h2h", help="Artifacts, ONNX files and logs (large, not committed).")
    p.add_argument("--results", type=Path, default=RESULTS, help="One JSON per finished row (committed).")
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--epochs", default="1,3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", default="deploykit,tp-mag-global,tp-taylor-global,control")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", help="DEPLOYKIT_CACHE for the rows (the latency table is measured once there).")
    p.add_argument("--render", action="store_true", help="Write the table from the finished rows only.")
    p.add_argument("--out", type=Path, help="Markdown file for --render (default: stdout).")
    p.add_argument("--plot", type=Path, help="With --render: also draw top-1 against latency (PNG) from the same rows.")
    p.add_argument("--code-version", help="With --render: the code version whose rows to read (a grid run from a "
                   "pinned worktree) instead of this checkout's; the table names the rows' commits. A comma list: each "
                   "cell and budget is read at the first version that has any of its rows.")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--phase", default="train", help=argparse.SUPPRESS)
    args = p.parse_args()
    DATA, RESULTS = args.data, args.results
    if args.code_version:
        READ_VERSIONS = args.code_version.split(",")
        VERSION = READ_VERSIONS[0]
    if args.job:
        one(Job(**json.loads(args.job)), Path(args.work), args.data, args.phase)
        return
    unknown = [r for r in args.rows.split(",") if r not in ROWS] + [c for c in args.cells.split(",") if c not in CELLS]
    if unknown:
        sys.exit(f"unknown rows/cells {unknown}; valid rows: {', '.join(ROWS)}; cells: {', '.join(CELLS)}")
    if args.render:
        text = render(args)
        if args.out:
            args.out.write_text(text + "\n")
        else:
            print(text)
        if args.plot:
            plot(args, args.plot)
        return
    run_grid(args)


DATA = SHARED
RESULTS = ROOT / "benchmarks" / "results" / "headtohead_rows"
VERSION = code_version(JOB_VERSION)
READ_VERSIONS: list[str] = []  # --code-version's list (render only)

if __name__ == "__main__":
    main()
