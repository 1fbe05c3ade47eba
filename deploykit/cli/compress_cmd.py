"""``deploykit compress``: prune a model physically to a MACs target."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, human, ignore_option, json_option, model_options, out, table

EXAMPLE = (
    "Example: deploykit compress cifar:resnet20 --weights ../shared/data/weights/resnet20-12fca82f.th "
    "--data cifar10:../shared/data/cifar10 --target-macs 0.5 --finetune-epochs 1 --out out/r20"
)


@click.command("compress", epilog=EXAMPLE, help=f"""Remove channels physically (a smaller dense model) until
MACs <= target x the original's; write DIR/plan.json, DIR/model.safetensors and DIR/report.json.\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Artifact directory to write.")
@click.option("--target-macs", required=True, type=float, help="Keep at most this fraction of the MACs, in (0, 1].")
@click.option("--criterion", default="fisher", show_default=True, help="Channel importance criterion (l1, l2, fisher, ...).")
@click.option("--data", help="DATA spec: calibration and fine-tuning use its train split, top-1 its test split.")
@click.option("--calib-batches", default=8, show_default=True, type=int, help="Calibration batches for data-driven criteria.")
@click.option("--batch-size", default=64, show_default=True, type=int, help="Batch size for calibration and fine-tuning.")
@click.option("--finetune-epochs", default=0.0, show_default=True, type=float, help="Epochs of fine-tuning after pruning.")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Peak learning rate of fine-tuning (cosine).")
@click.option("--kd", is_flag=True, help="Distil from the unpruned model while fine-tuning.")
@click.option("--normalize", help="Divide scores by the cost saved: memory, flops, params, none (default: the criterion's).")
@click.option("--round-to", default=1, show_default=True, type=int, help="Keep every pruned width a multiple of this.")
@click.option("--max-ratio", default=0.9, show_default=True, type=float, help="Remove at most this fraction of any group.")
@model_options
@ignore_option
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out, once the new artifact is complete.")
@json_option
def compress(out_dir: Path, json_path: Path | None, ignore: tuple[str, ...], **kwargs) -> None:
    """Compress to a MACs target."""
    from deploykit.compression import compress as run
    from deploykit.progress import RichReporter

    report = run(reporter=RichReporter(), out=str(out_dir), ignore=list(ignore), **kwargs)
    rows = [[name, human(r["params"]), human(r["macs"]), human(r["activation_bytes"], "B"), r.get("top1")]
            for name, r in (("base", report["base"]), ("pruned", report["pruned"]))]
    out(table(["model", "params", "MACs", "activations", "top-1"], rows))
    out(f"wrote {out_dir} ({report['seconds']} s)")
    emit(report, json_path)
