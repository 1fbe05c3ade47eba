"""YOLO detectors on a synthetic detection set built from real CIFAR-10 photos: mAP@0.5 of
the base (trained here, briefly: no pretrained weights offline), pruned to half the MACs, and
pruned + fine-tuned (YOLO's own loss + head KD), with export parity and an Engine check.

    python benchmarks/detection.py --models yolov8n.yaml,yolo11n.yaml --ignore yolo11n.yaml=model.10

The set is *synthetic* (deploykit/data/synthetic_det.py): canvases with CIFAR-10 images
pasted at random positions and scales, classes and boxes known. The numbers say how much
pruning costs and fine-tuning recovers on it, not how these detectors do on COCO.
Writes benchmarks/results/detection.md; work files (data set, weights, artifacts) go to --work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, code_version, git_commit, provenance  # noqa: E402

JOB_VERSION = 1


def base_weights(spec: str, shape: tuple[int, ...], data: str, epochs: float, lr: float, batch: int, path: Path,
                 seed: int) -> float:
    """Train the base detector from scratch (cached at ``path``); returns the seconds spent (0 when cached)."""
    from safetensors.torch import save_file

    from deploykit.data import load_dataset
    from deploykit.train.loop import TASKS, TrainConfig, train
    from deploykit.zoo import build_model

    if path.is_file():
        return 0.0
    torch.manual_seed(seed)
    built = build_model(spec, input_shape=shape)
    ds = load_dataset(f"{data}:train")
    start = time.perf_counter()
    steps = []
    train(built.model, ds, built.preprocess, TrainConfig(epochs=epochs, lr=lr, batch_size=batch, optimizer="adamw",
                                                         seed=seed), task=TASKS.get("detection"),
          on_step=lambda i, n, loss: (steps.append(loss), print(f"  base {i}/{n} loss {loss:.3f}", flush=True)
                                      if i % 20 == 0 or i == n else None))
    seconds = time.perf_counter() - start
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in built.model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "first_loss": steps[0], "last_loss": steps[-1]}))
    return seconds


def parity_and_engine(art: Path, data: str, onnx_path: Path) -> dict[str, float]:
    """Export the pruned artifact, check parity on real test canvases, and run the Engine on one."""
    import deploykit
    from deploykit.data import load_dataset
    from deploykit.export.onnx import check_parity, ort_session

    built = deploykit.load(art)
    deploykit.export_onnx(built, onnx_path)
    ds = load_dataset(f"{data}:test")
    x, _ = ds.batch(np.arange(8), built.preprocess)
    parity = check_parity(built.exported, onnx_path, [x])
    with torch.no_grad():
        ref = built.exported(x).numpy()
    got = ort_session(onnx_path).run(None, {"input": x.numpy()})[0]
    with deploykit.Engine(onnx_path) as engine:
        dets = engine.predict(list(ds.images[:8]))
    return {"max_rel_diff": parity["max_rel_diff"],
            "score_max_abs_diff": float(np.abs(ref[:, 4:] - got[:, 4:]).max()),
            "engine_boxes_per_image": float(np.mean([len(d) for d in dets]))}


def run_model(cfg: str, args: argparse.Namespace, work: Path, data: str) -> dict:
    import deploykit
    from deploykit.data import load_dataset
    from deploykit.train.loop import TASKS
    from deploykit.zoo import build_model

    spec = f"ultralytics:{cfg},nc=10"
    shape = (1, 3, args.canvas, args.canvas)
    weights = work / f"{cfg}-base-e{args.base_epochs}.safetensors"
    base_seconds = base_weights(spec, shape, data, args.base_epochs, args.lr, args.batch, weights, args.seed)
    base_seconds = base_seconds or json.loads(weights.with_suffix(".json").read_text())["seconds"]
    art = work / f"{cfg}-pruned"
    ignore = [m for c, _, m in (i.partition("=") for i in args.ignore) if c == cfg]
    start = time.perf_counter()
    report = deploykit.compress(model=spec, weights=str(weights), input_shape="x".join(map(str, shape)), data=data,
                                target_macs=0.5, criterion=args.criterion, finetune_epochs=args.finetune_epochs,
                                batch_size=args.batch, optimizer="adamw", lr=args.finetune_lr, kd=True,
                                bn_batches=20, out=str(art), force=True, seed=args.seed, ignore=ignore)
    compress_seconds = time.perf_counter() - start
    # The same metric on the base without BN recalibration, from the same evaluator, as a cross-check.
    built = build_model(spec, weights=str(weights), input_shape=shape)
    base_map = TASKS.get("detection").evaluate(built.model, load_dataset(f"{data}:test"), built.preprocess)
    ev = report["eval"][f"{data}:test"]
    return {
        "model": cfg, "input": args.canvas, "params": (report["base"]["params"], report["pruned"]["params"]),
        "macs": (report["base"]["macs"], report["pruned"]["macs"]), "macs_ratio": report["ratios"]["macs"],
        "map50": {"base": base_map, "report_base": ev["base"], "pruned": ev["after_pruning"],
                  "pruned_bn": ev["after_bn_recalibration"], "finetuned": ev["final"]},
        "base_train_s": round(base_seconds), "compress_s": round(compress_seconds),
        "export": parity_and_engine(art, data, work / f"{cfg}-pruned.onnx"),
        "rounding": report["rounding"]["unrounded_layers"], "ignore": ignore,
        "left_whole": len(report.get("verification", {}).get("not_followed", []) or []),
    }


def markdown(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["# YOLO detectors: prune to half the MACs, fine-tune, serve (synthetic CIFAR-10 detection set)", ""]
    lines += provenance(command, code_version(JOB_VERSION))
    lines += [
        f"**The data set is synthetic**: {args.train} training and {args.test} test canvases of {args.canvas}x"
        f"{args.canvas} pixels, each with 1-3 real CIFAR-10 photos pasted at random positions and sizes (24-64 px "
        "on 128 px canvases, scaled with the canvas) over a low-contrast CIFAR-10 background; 10 classes, boxes exact "
        "by construction (`deploykit/data/synthetic_det.py`). Training canvases use CIFAR-10's training photos, test "
        "canvases its test photos. No pretrained detector weights are available offline, so the base is trained "
        f"here from random init for {args.base_epochs} epochs (AdamW, lr {args.lr}, batch {args.batch}, YOLO's own "
        "loss): a weak base, and the absolute numbers are low. They measure what pruning costs and what fine-tuning "
        "recovers on this set, nothing about COCO.", "",
        f"Pruning: `--target-macs 0.5 --criterion {args.criterion}` (round-to 8), then BatchNorm recalibration "
        f"(20 batches), then {args.finetune_epochs} epochs of fine-tuning with YOLO's loss and head KD from the "
        f"unpruned base (`--kd`, α 0.5, T 4; AdamW lr {args.finetune_lr}). mAP@0.5: torchmetrics "
        "`MeanAveragePrecision` (pycocotools backend) after torchvision `batched_nms` at Ultralytics' validation "
        "settings (conf 0.001, IoU 0.7, 300 boxes), in %. Parity: the exported decoded head `[N, 4+nc, A]` against "
        "PyTorch on 8 real test canvases (relative to the largest value, i.e. box pixels; the class-score rows' "
        "absolute difference is listed too). Engine: boxes per image at its default conf 0.25.", "",
        "| model | input | params base → pruned | MACs base → pruned (ratio) | mAP@0.5 base | pruned | pruned + BN recal. "
        "| pruned + fine-tuned | parity rel / score abs | Engine boxes/img | groups left whole | base training s "
        "| compress s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        m, e = r["map50"], r["export"]
        lines.append(
            f"| {r['model']} | {r['input']} | {r['params'][0] / 1e6:.2f}M → {r['params'][1] / 1e6:.2f}M "
            f"| {r['macs'][0] / 1e6:.0f}M → {r['macs'][1] / 1e6:.0f}M ({r['macs_ratio']:.3f}) | {m['base']:.1f} "
            f"| {m['pruned']:.1f} | {m['pruned_bn']:.1f} | **{m['finetuned']:.1f}** "
            f"| {e['max_rel_diff']:.1e} / {e['score_max_abs_diff']:.1e} | {e['engine_boxes_per_image']:.1f} "
            f"| {r['left_whole']}{' (--ignore ' + ', '.join(r['ignore']) + ')' if r['ignore'] else ''} "
            f"| {r['base_train_s']} | {r['compress_s']} |")
    lines += ["", "Rows as JSON:", "", "```json", json.dumps(rows, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="yolov8n.yaml", help="comma-separated Ultralytics configs")
    ap.add_argument("--cifar", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "deploykit" / "bench-detection"))
    ap.add_argument("--canvas", type=int, default=96)
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--base-epochs", type=float, default=8)
    ap.add_argument("--finetune-epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--finetune-lr", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--criterion", default="l2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ignore", action="append", default=[], metavar="CFG=MODULE",
                    help="compress --ignore MODULE for that model (yolo11n.yaml=model.10: its C2PSA attention)")
    ap.add_argument("--md", default=str(ROOT / "benchmarks" / "results" / "detection.md"))
    args = ap.parse_args(argv)
    command = "python benchmarks/detection.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    from deploykit.data.synthetic_det import make_synthetic_detection

    work = Path(args.work)
    synth = work / f"synth-{args.canvas}-{args.train}-{args.test}-s{args.seed}"
    if not (synth / "classes.txt").is_file():
        scale = args.canvas / 128
        make_synthetic_detection(args.cifar, synth, args.train, args.test, args.canvas, min_side=round(24 * scale),
                                 max_side=round(64 * scale), seed=args.seed)
    rows = []
    version = code_version(JOB_VERSION)
    settings = {k: v for k, v in vars(args).items() if k not in ("models", "md", "work", "cifar")}
    for cfg in args.models.split(","):
        # One row per model, cached by the settings and the code version: a later run adds models to the
        # table, and a table never mixes rows of different code.
        key = hashlib.sha256(json.dumps([cfg, settings, version], sort_keys=True).encode()).hexdigest()[:10]
        cached = work / "rows" / f"{cfg}-{key}.json"
        if cached.is_file():
            rows.append(json.loads(cached.read_text()))
            continue
        print(f"{cfg}: training the base, pruning, fine-tuning", flush=True)
        rows.append({**run_model(cfg, args, work, f"yolo:{synth}"), "commit": git_commit()})
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(rows[-1]))
        Path(args.md).write_text(markdown(rows, args, command))
    Path(args.md).write_text(markdown(rows, args, command))
    print(Path(args.md).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
