"""``deploykit eval``: top-1 accuracy of a model, artifact or ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, json_option, model_options, out
from deploykit.cli.options import backend_option

EXAMPLE = "Example: deploykit eval out/r20.onnx --data cifar10:../shared/data/cifar10:test"


@click.command("eval", epilog=EXAMPLE, help=f"""Top-1 accuracy on a dataset (its test split unless the spec names
one). MODEL may also be an .onnx file exported by deploykit (run in ONNX Runtime).\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--data", required=True, help="DATA spec: cifar10:DIR[:train|test][:lossless|jpeg75], digits[:train|test], imagefolder:DIR.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N images only.")
@backend_option("deploykit.runtime.backends:RUNNERS", "Run an .onnx/.engine file or bundle DIR on this backend",
                without="MODEL runs in PyTorch, an .onnx file in ONNX Runtime")
@model_options
@json_option
def eval_(model: str, data: str, limit: int | None, backend: str | None, weights: str | None, input_shape: str | None,
          trust_factory: bool, json_path: Path | None) -> None:
    """Evaluate top-1."""
    from deploykit.data import load_dataset
    from deploykit.data.splits import names_split, with_split
    from deploykit.evaluate import evaluate_any
    from deploykit.zoo import trusting_factories

    spec = data if names_split(data) else with_split(data, "test")
    ds = load_dataset(spec).subset(limit)
    if backend is not None and backend != "torch":
        from deploykit.evaluate import evaluate_runner

        top1 = evaluate_runner(model, ds, backend)
    else:
        with trusting_factories(trust_factory):  # an artifact's plan.json may name a factory
            top1 = evaluate_any(model, ds, weights=weights, input_shape=input_shape)
    out(f"{model}: top-1 {top1:.2f}% on {len(ds)} images of {spec}" + (f" ({backend})" if backend else ""))
    emit({"top1": round(top1, 2), "n": len(ds), "data": spec, **({"backend": backend} if backend else {})}, json_path)
