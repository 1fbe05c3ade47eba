"""``deploykit export``: ONNX with a parity check in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, json_option, model_options, out

EXAMPLE = "Example: deploykit export out/r20 --onnx out/r20.onnx --opset 17 --data cifar10:../shared/data/cifar10"


@click.command("export", epilog=EXAMPLE, help=f"""Export to ONNX, run onnx.checker, and compare ONNX Runtime with
PyTorch on the same inputs (random, and real with --data); exit 1 when the max relative difference exceeds 1e-4.
\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset to write.")
@click.option("--data", help="DATA spec: also check parity on real images (its test split).")
@click.option("--samples", default=64, show_default=True, type=int, help="Real images to check parity on.")
@model_options
@json_option
def export(model: str, onnx_path: Path, opset: int, data: str | None, samples: int, weights: str | None,
           input_shape: str | None, json_path: Path | None) -> None:
    """Export and verify."""
    from deploykit.data import batches, load_dataset
    from deploykit.data.splits import with_split
    from deploykit.errors import ParityError
    from deploykit.export.onnx import PARITY_TOLERANCE, check_parity, export_onnx
    from deploykit.zoo import build_model, check_input, parse_shape

    ds = load_dataset(with_split(data, "test")).subset(samples) if data else None
    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None)
    check_input(built)
    result = export_onnx(built, onnx_path, opset=opset)
    inputs = [built.example_input(1, seed=0), built.example_input(4, seed=1)]
    if ds is not None:
        inputs += [x for x, _ in batches(ds, built.preprocess, 32)]
    result.update(check_parity(built.model, onnx_path, inputs))
    result["real_data"] = ds is not None
    out(f"wrote {onnx_path} (opset {result['opset']}); ONNX Runtime vs PyTorch: "
        f"max abs diff {result['max_abs_diff']:.3g}, max rel diff {result['max_rel_diff']:.3g}")
    emit(result, json_path)
    if result["max_rel_diff"] > PARITY_TOLERANCE:
        raise ParityError(f"parity check failed: max relative difference {result['max_rel_diff']:.3g} > {PARITY_TOLERANCE}")
