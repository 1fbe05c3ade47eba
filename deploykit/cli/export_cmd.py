"""``deploykit export``: ONNX with a parity check in ONNX Runtime; optionally in FP16 or
INT8 (precision written into the graph), a TensorRT engine, and a Jetson bundle."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, json_option, model_options, out

EXAMPLE = """Example: deploykit export out/r20 --onnx out/r20.onnx --opset 17 --data cifar10:../shared/data/cifar10\n
Example: deploykit export cifar:resnet20 --weights resnet20.th --onnx r20_int8.onnx --precision int8
--calib-data cifar10:../shared/data/cifar10 --bundle jetson out/r20-jetson"""


@click.command("export", epilog=EXAMPLE, help=f"""Export to ONNX, run onnx.checker, and compare ONNX Runtime with
PyTorch on the same inputs (random, and real with --data); exit 1 when the max relative difference exceeds 1e-4.
With --precision fp16|int8 the precision is written into the graph (fp16 casts; int8 Q/DQ calibrated on
--calib-data) and checked against FP32 on ONNX Runtime (max difference, top-1 agreement). --trt builds a
TensorRT engine (needs a GPU); --bundle jetson DIR writes a folder that builds and benchmarks it on a Jetson.
\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset to write.")
@click.option("--data", help="DATA spec: also check parity (and precision) on real images (its test split).")
@click.option("--samples", default=64, show_default=True, type=int, help="Real images to check parity and precision on.")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 or int8, written into the ONNX graph.")
@click.option("--calib-data", help="DATA spec of real images calibrating INT8 activations (its train split).")
@click.option("--calib-samples", default=256, show_default=True, type=click.IntRange(min=1), help="INT8 calibration images.")
@click.option("--trt", "trt_path", type=click.Path(dir_okay=False, path_type=Path), help="Also build a TensorRT engine here (GPU).")
@click.option("--bundle", nargs=2, type=(str, click.Path(file_okay=False, path_type=Path)), metavar="TARGET OUT_DIR",
              help="Write a device bundle (TARGET: jetson) with the ONNX, reference data, kernels and a bench script.")
@click.option("--force", is_flag=True, help="Replace a non-empty bundle OUT_DIR once the new one is complete.")
@model_options
@json_option
def export(model: str, onnx_path: Path, opset: int, data: str | None, samples: int, precision: str,
           calib_data: str | None, calib_samples: int, trt_path: Path | None, bundle: tuple[str, Path] | None,
           force: bool, weights: str | None, input_shape: str | None, trust_factory: bool, json_path: Path | None) -> None:
    """Export and verify."""
    import numpy as np

    from deploykit.atomic import check_out_dir, write_json
    from deploykit.data import load_dataset
    from deploykit.data.splits import with_split
    from deploykit.errors import DeployKitError, ParityError
    from deploykit.export import precision as prec
    from deploykit.export.bundle import BUNDLES, write_bundle
    from deploykit.export.onnx import PARITY_TOLERANCE, check_parity, export_onnx, read_sidecar, sidecar_path
    from deploykit.zoo import build_model, check_input, parse_shape

    # Every cheap check first: nothing is written when an argument is bad.
    prec.PRECISIONS.get(precision)
    if precision == "int8" and not calib_data:
        raise DeployKitError("--precision int8 needs --calib-data SPEC: real images to calibrate activation ranges")
    if bundle:
        BUNDLES.get(bundle[0])
        check_out_dir(bundle[1], force)
    check_spec = data or calib_data
    ds = load_dataset(with_split(check_spec, "test")).subset(samples) if check_spec else None
    calib = prec.calibration_from_spec(calib_data, calib_samples) if precision == "int8" else None

    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None,
                        trust_factory=trust_factory)
    check_input(built)
    with tempfile.TemporaryDirectory(prefix="dk-export-") as tmp:
        fp32_path = onnx_path if precision == "fp32" else Path(tmp) / "fp32.onnx"
        result = export_onnx(built, fp32_path, opset=opset)
        inputs = [built.example_input(1, seed=0), built.example_input(4, seed=1)]
        real = prec.preprocessed(ds.images, built.preprocess, 32) if ds is not None else []
        result.update(check_parity(built.exported, fp32_path, inputs + [__import__("torch").from_numpy(x) for x in real]))
        result["real_data"] = ds is not None
        if result["max_rel_diff"] > PARITY_TOLERANCE:
            raise ParityError(f"parity check failed: max relative difference {result['max_rel_diff']:.3g} > {PARITY_TOLERANCE}")
        out(f"ONNX Runtime vs PyTorch (fp32): max abs diff {result['max_abs_diff']:.3g}, "
            f"max rel diff {result['max_rel_diff']:.3g}")
        result["precision"] = precision
        if precision != "fp32":
            result.update(prec.convert(fp32_path, onnx_path, precision, calib))
            check_inputs = real or [x.numpy() for x in inputs]
            check = prec.verify(fp32_path, onnx_path, check_inputs, ds.labels if ds is not None else None)
            result["precision_check"] = {**check, "real_data": ds is not None}
            top1 = f", top-1 {check['top1']:.2f}% vs fp32 {check['top1_reference']:.2f}%" if "top1" in check else ""
            out(f"{precision} vs fp32 on ONNX Runtime ({check['n']} {'real' if ds is not None else 'random'} inputs): "
                f"max abs diff {check['max_abs_diff']:.3g}, top-1 agreement {check['top1_agreement']:.2f}%{top1}")
    result["onnx"] = str(onnx_path)
    out(f"wrote {onnx_path} (opset {result['opset']}, {precision})")

    if bundle:
        ref = real[0][:8] if real else np.concatenate([built.example_input(4, seed=2).numpy()])
        manifest = write_bundle(bundle[0], onnx_path, bundle[1], ref, force=force)
        result["bundle"] = {"target": bundle[0], "dir": str(bundle[1]), "files": len(manifest["files"])}
        out(f"wrote {bundle[0]} bundle {bundle[1]} (run {bundle[1] / 'run.sh'} on the device)")
    emit(result, json_path)

    if trt_path:
        from deploykit.runtime.trt import BuildConfig, build_engine

        info = build_engine(onnx_path, trt_path, BuildConfig(precision=precision,
                                                            timing_cache=trt_path.with_name(trt_path.name + ".timing")))
        write_json(sidecar_path(trt_path), {**read_sidecar(onnx_path), "tensorrt": info})
        result["trt"] = info
        emit(result, json_path)
        out(f"wrote {trt_path} (TensorRT {info['tensorrt']})")
