"""Models users bring: timm CNNs across families and Ultralytics YOLO, at half the MACs.

For every model, in its own process (random weights: speed and structure, not accuracy):

* inspect: groups, prunable, left whole and why (the self-check included: pruned == masked);
* deploykit: ``compress SPEC --target-macs 0.5 --criterion l2`` (default round-to 8), export to
  ONNX with the parity check, and the plan's own verification;
* Torch-Pruning 1.6: ``BasePruner`` + ``GroupMagnitudeImportance(p=2)``, ``round_to=8``, the
  output layers ignored, the uniform ratio bisected to at most the same MACs: its pruned model
  or its error;
* latency: base, deploykit and Torch-Pruning ONNX files interleaved on ONNX Runtime CPU, batch 1,
  1 thread (``_common.time_efficiencies``: fastest block medians); realized efficiency =
  (1 − latency ratio) / (1 − MACs ratio), MACs counted over the exported graph.

Rows are cached under ``--results`` by code version and settings; a failing stage is recorded
in its row, never hidden.

    .venv/bin/python benchmarks/zoo_external.py [--models timm:resnet18,ultralytics:yolov8n.yaml] [--runs 200]
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import BLOCK, code_version, per_model_main, provenance, time_efficiencies  # noqa: E402

JOB_VERSION = 2  # 2: latency ratio from fastest blocks (p50 ratio kept beside it)
TIMM = [
    # the failures issue 13 listed first, then more families
    "cspresnet50", "res2net50_26w_4s", "rexnet_100", "fastvit_t8", "mobilevitv2_050", "ghostnet_100", "efficientvit_m0",
    "resnet50d", "efficientnet_lite0", "mobilenetv3_large_100", "regnety_002", "convnext_atto", "hrnet_w18_small",
    "repvgg_a0", "dla34", "densenet121", "mobileone_s0", "resnext26ts", "mixnet_s", "tf_efficientnetv2_b0",
    "seresnext26d_32x4d", "lcnet_050", "ese_vovnet19b_dw", "tinynet_a", "resnet18",
]
YOLO = ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov8n-cls.yaml"]
SPECS = [f"ultralytics:{n}" for n in YOLO[:2]] + [f"timm:{n}" for n in TIMM[:7]] + [f"ultralytics:{n}" for n in YOLO[2:]] \
    + [f"timm:{n}" for n in TIMM[7:]]
SHAPES = {"timm": (1, 3, 128, 128), "ultralytics": (1, 3, 256, 256)}
VERSION = code_version(JOB_VERSION)
TP_SECONDS = 300  # Torch-Pruning hangs on some models (efficientvit, C2PSA): bounded, recorded as its error


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:140]}"


def _outputs(model: Any) -> list[Any]:
    """Layers whose outputs are the model's outputs (kept by Torch-Pruning as deploykit keeps them)."""
    import torch

    head = getattr(model, "get_classifier", None)
    if callable(head) and isinstance(head(), torch.nn.Module) and any(True for _ in head().parameters()):
        return [head()]
    if hasattr(model, "model") and hasattr(model.model[-1], "one2many"):  # YoloCore: the Detect head's last convs
        det = model.model[-1]
        return [branch[i][-1] for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
                if getattr(det, name, None) is not None for branch in [getattr(det, name)] for i in range(len(branch))]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1:]


def tp_prune(built: Any, target: float) -> tuple[Any, float, str]:
    """Torch-Pruning round_to=8 at the uniform ratio reaching ``target`` of the MACs: (model, seconds, error)."""
    import torch_pruning as tp

    from deploykit.graph.costs import measure

    model, x = built.traced, built.example_input()
    base = measure(model, x).macs

    def prune(ratio: float) -> tuple[Any, float]:
        m = copy.deepcopy(model)
        names = {id(mod): n for n, mod in model.named_modules()}
        ignored = [dict(m.named_modules())[names[id(o)]] for o in _outputs(model)]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                          pruning_ratio=ratio, ignored_layers=ignored, round_to=8)
            pruner.step()
        seconds = time.perf_counter() - t0
        m(x)  # its pruned model must still run
        return m, seconds

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"more than {TP_SECONDS} s (Torch-Pruning's graph walk did not finish)")

    signal.signal(signal.SIGALRM, hang)
    signal.alarm(TP_SECONDS)
    lo, hi, best = 0.0, 0.95, None
    try:
        for _ in range(7):
            mid = (lo + hi) / 2
            m, s = prune(mid)
            if measure(m, x).macs <= target * base:
                best, hi = (m, s), mid
            else:
                lo = mid
    except (Exception, MemoryError) as e:  # noqa: BLE001 - Torch-Pruning's failure is the finding
        return None, 0.0, _err(e)
    finally:
        signal.alarm(0)
    if best is None:
        return None, 0.0, "target not reached"
    return best[0], best[1], ""


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: inspect, compress, export, Torch-Pruning, interleaved timing; every stage's failure recorded."""
    import torch

    import deploykit
    from deploykit.export.onnx import check_parity, export_onnx
    from deploykit.graph.costs import measure
    from deploykit.graph.groups import ModelGraph
    from deploykit.graph.verify import probe
    from deploykit.zoo import build_model
    from deploykit.zoo.base import BuiltModel

    torch.set_num_threads(threads)
    shape = SHAPES[spec.split(":")[0]]
    row: dict[str, Any] = {"model": spec, "input": "x".join(map(str, shape))}
    base = build_model(spec, input_shape=shape, pretrained=False)
    x = base.example_input()
    t0 = time.perf_counter()
    try:
        graph = ModelGraph(base.traced, x)
        verdict = probe(base.traced, x, graph)
        whole = [g for g in graph.groups if not g.prunable]
        why = collections.Counter(_kind(g.reason or "") for g in whole)
        row["inspect"] = {"groups": len(graph.groups), "prunable": len(graph.prunable()), "whole": len(whole),
                          "why": dict(why), "not_followed": verdict.failed, "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # noqa: BLE001
        row["inspect"] = {"error": _err(e)}
    with tempfile.TemporaryDirectory(prefix="dk-ext-") as tmp_:
        tmp = Path(tmp_)
        paths = {"base": tmp / "base.onnx"}
        export_onnx(base, paths["base"])
        exported_base = measure(base.exported, x).macs
        try:
            t0 = time.perf_counter()
            report = deploykit.compress(model=spec, out=str(tmp / "dk"), target_macs=target, criterion="l2",
                                        input_shape="x".join(map(str, shape)))
            row["compress_s"] = round(time.perf_counter() - t0, 1)
            row["compress_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            ours = deploykit.load(str(tmp / "dk"))
            paths["deploykit"] = tmp / "dk.onnx"
            export_onnx(ours, paths["deploykit"])
            parity = check_parity(ours.exported, paths["deploykit"], [ours.example_input()])["max_rel_diff"]
            v = report.get("verification", {})
            row["deploykit"] = {**report["ratios"], "macs_graph": report["ratios"]["macs"],
                                "macs": measure(ours.exported, x).macs / exported_base, "parity": parity,
                                "not_followed": len(v.get("not_followed", {})), "unrounded": report["rounding"]["unrounded_layers"]}
        except Exception as e:  # noqa: BLE001 - a deploykit failure is recorded, and counted in the table
            row["deploykit"] = {"error": _err(e)}
        m, seconds, err = tp_prune(base, target)
        if m is None:
            row["tp-rt8"] = {"error": err}
        else:
            try:
                paths["tp-rt8"] = tmp / "tp.onnx"
                export_onnx(BuiltModel(m, spec, base.input_shape, base.preprocess), paths["tp-rt8"])
                row["tp-rt8"] = {"macs": measure(m, x).macs / measure(base.traced, x).macs, "prune_s": round(seconds, 2)}
            except Exception as e:  # noqa: BLE001
                paths.pop("tp-rt8", None)
                row["tp-rt8"] = {"error": f"export: {_err(e)}"}
        time_efficiencies(row, paths, runs, threads)
    row["load_avg"] = os.getloadavg()[0]
    return row


def _kind(reason: str) -> str:
    """A reason without its module path: ``model output``, ``not followed: ...``."""
    if reason.startswith("not followed"):
        return "not followed"
    return reason.split(" (")[0].split(":")[0]


def fmt(v: float | None, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    loads = [r["load_avg"] for r in rows if "load_avg" in r]
    lines = ["# Models users bring: timm and Ultralytics YOLO at half the MACs", "",
             *provenance(f"python benchmarks/zoo_external.py --runs {args.runs} --threads {args.threads}", VERSION),
             f"Random weights. Inputs: timm {SHAPES['timm']}, YOLO {SHAPES['ultralytics']} (small, for this 2-core "
             "machine). deploykit: `compress --target-macs 0.5 --criterion l2` (round-to 8), then export with parity. "
             "Torch-Pruning 1.6: GroupMagnitudeImportance(p=2), round_to=8, output layers ignored, uniform ratio "
             f"bisected to ≤ the same MACs. Latency: ONNX Runtime CPU, {args.threads} thread, batch 1, base/deploykit/"
             f"Torch-Pruning interleaved, {args.runs} timed runs after 10 warm-ups; latency ratio of the fastest medians over "
             f"blocks of {BLOCK} runs (slow spells of this virtual machine add a fixed cost to every run, which a ratio "
             "of plain medians does not cancel; the p50 ratio's efficiency is in the JSON). Efficiency = (1 − latency "
             "ratio) / (1 − MACs ratio), MACs over the exported graph.", ""]
    if loads:
        lines += [f"**Machine load**: 1-minute load average {min(loads):.1f} to {max(loads):.1f} on 2 cores while rows ran "
                  "(other jobs shared the machine): latency ratios are noisier than on an idle machine.", ""]
    if missing:
        lines += [f"**Partial table**: not run at this code version: {', '.join(missing)}.", ""]
    lines += ["| model | groups | prunable | left whole (why) | dk MACs | parity | dk latency | **dk eff.** | "
              "compress s | TP-rt8 | TP eff. |", "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        ins, dk, tp = r.get("inspect", {}), r.get("deploykit", {}), r.get("tp-rt8", {})
        why = "; ".join(f"{k} ×{n}" for k, n in ins.get("why", {}).items()) if "why" in ins else ins.get("error", "–")
        dk_cells = (f"{fmt(dk['macs'])} | {dk['parity']:.1e} | {fmt(dk.get('latency'))} | **{fmt(dk.get('efficiency'), 2)}** | "
                    f"{r.get('compress_s', 0):.0f}") if "macs" in dk else f"**error**: {dk.get('error')} | – | – | – | –"
        tp_cells = (f"MACs {fmt(tp['macs'])}, latency {fmt(tp.get('latency'))} | {fmt(tp.get('efficiency'), 2)}"
                    if "macs" in tp else f"{tp.get('error')} | –")
        lines.append(f"| {r['model']} | {ins.get('groups', '–')} | {ins.get('prunable', '–')} | {why} | {dk_cells} | "
                     f"{tp_cells} |")
    effs = [r["deploykit"]["efficiency"] for r in rows if "efficiency" in r.get("deploykit", {})]
    crashes = [r["model"] for r in rows if "error" in r.get("deploykit", {})]
    tp_fail = [r["model"] for r in rows if "error" in r.get("tp-rt8", {})]
    lines.append("")
    if effs:
        lines.append(f"deploykit: {len(effs)} of {len(rows)} models compressed and exported with parity; realized "
                     f"efficiency median {statistics.median(effs):.2f} (min {min(effs):.2f}, max {max(effs):.2f}). "
                     f"Failures: {', '.join(crashes) or 'none'}.")
    both = [r for r in rows if "efficiency" in r.get("deploykit", {}) and "efficiency" in r.get("tp-rt8", {})]
    if both:
        lines.append(f"Over the {len(both)} models both finished: median efficiency deploykit "
                     f"{statistics.median(r['deploykit']['efficiency'] for r in both):.2f}, Torch-Pruning round_to=8 "
                     f"{statistics.median(r['tp-rt8']['efficiency'] for r in both):.2f}.")
    lines.append(f"Torch-Pruning failed on {len(tp_fail)} of {len(rows)}: {', '.join(tp_fail) or 'none'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "zoo_external", 200, job, markdown)


if __name__ == "__main__":
    main()
