"""``deploykit compress``: prune a model physically to cost targets, on a schedule, with optional distillation."""

from __future__ import annotations

import os
from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, human, ignore_option, json_option, model_options, out, table
from deploykit.compression import TARGETS

EXAMPLE = (
    "Example: deploykit compress cifar:resnet20 --weights ../shared/data/weights/resnet20-12fca82f.th "
    "--data cifar10:../shared/data/cifar10 --target-macs 0.5 --schedule progressive --interval 2 "
    "--finetune-epochs 1 --kd --out out/r20  (several processes: torchrun --nproc-per-node 2 -m deploykit compress ...)"
)


def target_options(f):
    """One ``--target-NAME`` per registered target (a new registry entry is a new flag)."""
    for name in reversed(TARGETS.names()):
        kind = TARGETS.get(name)
        f = click.option(f"--target-{name}", type=float, help=f"Keep at most this fraction of the {kind.what}, in (0, 1].")(f)
    return f


@click.command("compress", epilog=EXAMPLE, help=f"""Remove channels physically (a smaller dense model) until every
given cost target is met; write DIR/plan.json, DIR/model.safetensors and DIR/report.json. Under torchrun, every
process trains on its share of each global batch and rank 0 writes.\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Artifact directory to write.")
@target_options
@click.option("--criterion", default="fisher", show_default=True, help="Channel importance criterion (l1, l2, fisher, ...).")
@click.option("--normalize", help="Divide scores by the cost their removal saves: memory, flops, params, latency, none, ... "
              "(default: the criterion's; memory for fisher).")
@click.option("--schedule", default="oneshot", show_default=True,
              help="oneshot: prune once, then fine-tune; progressive: remove channels while fine-tuning.")
@click.option("--recover", help="Step between removal and fine-tuning: none, or reconstruct (least-squares refit of the "
              "consumer layers on calibration data; the default for --criterion lasso).")
@click.option("--interval", default=10, show_default=True, type=int, help="Progressive: iterations between removals.")
@click.option("--channels-per-step", default=1, show_default=True, type=int,
              help="Progressive: channels (chunks of --round-to) removed at each removal.")
@click.option("--prune-within", type=float,
              help="Progressive: finish pruning within this fraction of the budget (removals grow as needed), in (0, 1].")
@click.option("--data", help="DATA spec: calibration and fine-tuning use its train split, top-1 (mAP@0.5 for a "
              "detector with yolo:DIR) its test split.")
@click.option("--eval-data", multiple=True, metavar="SPEC", help="Another DATA spec to report top-1 on (repeatable).")
@click.option("--calib-batches", default=8, show_default=True, type=int, help="Calibration batches (one-shot, data-driven criteria).")
@click.option("--batch-size", default=64, show_default=True, type=int, help="Global batch size (all processes together).")
@click.option("--finetune-epochs", default=0.0, show_default=True, type=float,
              help="Training budget in epochs (progressive: pruning happens within it).")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Peak learning rate (cosine decay).")
@click.option("--optimizer", default="sgd", show_default=True, help="sgd (momentum 0.9, nesterov) or adamw.")
@click.option("--weight-decay", default=5e-4, show_default=True, type=float, help="Weight decay (not on BatchNorm or biases).")
@click.option("--kd", is_flag=True, help="Distil from the unpruned model (or --teacher): (1-a) CE + a T^2 KL.")
@click.option("--teacher", metavar="MODEL", help="--kd: distil from this MODEL instead of the unpruned one (same classes).")
@click.option("--teacher-weights", help="Weights file of --teacher.")
@click.option("--kd-alpha", default=0.5, show_default=True, type=float, help="Distillation weight a.")
@click.option("--kd-temperature", default=4.0, show_default=True, type=float, help="Distillation temperature T.")
@click.option("--bn-batches", default=20, show_default=True, type=int, help="Batches for BatchNorm recalibration after pruning.")
@click.option("--round-to", default="8", show_default=True,
              help="Keep every pruned width a multiple of this (16 runs faster on ONNX Runtime with AVX-512 and on "
              "TensorRT INT8, at a coarser choice); BLOCK:STEP (e.g. 16:8): multiples of BLOCK, or of STEP below "
              "BLOCK; auto: widths at the low side of latency steps (latency table).")
@click.option("--lut", help="Latency table from deploykit profile (--normalize latency, --target-latency, --round-to auto); "
              "default: the cached table for ONNX Runtime CPU, batch 1, 1 thread, measured on first use.")
@click.option("--latency-checks", default=3, show_default=True, type=int,
              help="--target-latency: time the pruned model against the base on the table's backend and, while it "
              "misses the target, prune further (at most this many times); 0: trust the table's prediction.")
@click.option("--max-ratio", default=0.9, show_default=True, type=float, help="Remove at most this fraction of any group.")
@click.option("--checkpoint-every", default=0, show_default=True, type=int,
              help="Write a resumable checkpoint to DIR/checkpoints every K iterations (0: never).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in DIR/checkpoints (same options).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (torchrun: each process its LOCAL_RANK).")
@model_options
@ignore_option
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out, once the new artifact is complete.")
@json_option
def compress(out_dir: Path, json_path: Path | None, ignore: tuple[str, ...], eval_data: tuple[str, ...], **kwargs) -> None:
    """Compress to cost targets."""
    from deploykit.atomic import check_replaceable, check_writable
    from deploykit.compression import compress as run
    from deploykit.progress import RichReporter

    # Also with --resume, which accepts an existing --out: the artifact replaces it at the end.
    check_replaceable(out_dir, "--out")
    check_writable(out_dir, "--out", directory=True)
    from deploykit.zoo import trusting_factories

    if all(kwargs.get(f"target_{n}") is None for n in TARGETS.names()):
        others = ", ".join(f"--target-{n}" for n in TARGETS.names() if n != "macs")
        raise click.UsageError(f"Missing option '--target-macs' (or {others})")
    if kwargs.get("device", "cpu").startswith("cuda") and os.environ.get("LOCAL_RANK") and kwargs["device"] == "cuda":
        kwargs["device"] = f"cuda:{os.environ['LOCAL_RANK']}"
    # Not a setting of the run (it changes nothing computed): it lets an artifact given as MODEL name a factory.
    with trusting_factories(kwargs.pop("trust_factory")):
        report = run(reporter=RichReporter(), out=str(out_dir), ignore=list(ignore), eval_data=list(eval_data), **kwargs)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 prints and writes
        return
    rows = [[name, human(r["params"]), human(r["macs"]), human(r["activation_bytes"], "B"), r.get("top1")]
            for name, r in (("base", report["base"]), ("pruned", report["pruned"]))]
    metric = {"map50": "mAP@0.5"}.get(report.get("metric", "top1"), "top-1")  # a detector reports mAP@0.5
    out(table(["model", "params", "MACs", "activations", metric], rows))
    not_followed = report.get("verification", {}).get("not_followed", {})
    if not_followed:
        out(f"{len(not_followed)} groups were left whole: deploykit could not follow them (pruned != masked; "
            "why: report.json 'verification')")
    rounding = report["rounding"]
    if rounding["unrounded_layers"]:
        out(f"{rounding['unrounded_layers']} layers in {len(rounding['unrounded'])} groups could not be rounded to "
            f"--round-to {rounding['round_to']} and were kept whole (why: report.json 'rounding')")
    checks = report.get("latency", {}).get("checks") or []
    if checks:
        last = checks[-1]
        out(f"measured latency {last['measured']:.3f} of the base (target {last['target']}, predicted "
            f"{last['predicted']:.3f}) after {len(checks)} timing(s) on the table's backend")
    out(f"wrote {out_dir} ({report['seconds']} s)")
    for warning in report.get("warnings", []):
        click.echo(warning, err=True)
    emit(report, json_path)
