"""``deploykit export``: ONNX with a parity check in ONNX Runtime; optionally in FP16 or
INT8 (precision written into the graph), a TensorRT engine, and a Jetson bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
Every output is written under a temporary name and moved into place only once all of them are complete and
checked: a failed run leaves existing files as they were. A model that fails the parity check is kept only as
OUT.failed.onnx (with its sidecar) for inspection.
\n\n{MODEL_HELP}""")
@click.argument("model")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset to write.")
@click.option("--data", help="DATA spec: also check parity (and precision) on real images (its test split).")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(min=1),
              help="Real images to check parity and precision on.")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 or int8, written into the ONNX graph.")
@click.option("--calib-data", help="DATA spec of real images calibrating INT8 activations (its train split).")
@click.option("--calib-samples", default=256, show_default=True, type=click.IntRange(min=1), help="INT8 calibration images.")
@click.option("--calib-method", default=None, help="INT8 activation calibration: percentile (default), entropy or minmax.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="INT8: keep the most sensitive layers in float until top-1 on 1000 held-out training images of "
                   "--calib-data is within this many points of FP32 (a per-layer sensitivity report goes into --json).")
@click.option("--trt", "trt_path", type=click.Path(dir_okay=False, path_type=Path), help="Also build a TensorRT engine here (GPU).")
@click.option("--bundle", nargs=2, type=(str, click.Path(file_okay=False, path_type=Path)), metavar="TARGET OUT_DIR",
              help="Write a device bundle (TARGET: jetson) with the ONNX, reference data, kernels and a bench script.")
@click.option("--force", is_flag=True, help="Replace a non-empty bundle OUT_DIR once the new one is complete.")
@model_options
@json_option
def export(model: str, onnx_path: Path, opset: int, data: str | None, samples: int, precision: str,
           calib_data: str | None, calib_samples: int, calib_method: str | None, max_drop: float | None,
           trt_path: Path | None, bundle: tuple[str, Path] | None,
           force: bool, weights: str | None, input_shape: str | None, trust_factory: bool,
           json_path: Path | None) -> None:
    """Export and verify."""
    import numpy as np
    import torch

    from deploykit.atomic import staged
    from deploykit.data import check_compatible, load_dataset, model_classes
    from deploykit.data.splits import with_split
    from deploykit.export import precision as prec
    from deploykit.export.bundle import write_bundle
    from deploykit.export.onnx import export_checked, read_sidecar, sidecar_path
    from deploykit.zoo import build_model, check_input, parse_shape

    _check_arguments(onnx_path, opset, precision, calib_data, trt_path, bundle, force, json_path)
    if (calib_method or max_drop is not None) and precision != "int8":
        from deploykit.errors import DeployKitError

        raise DeployKitError("--calib-method and --max-drop apply to --precision int8 only")
    if calib_method:
        from deploykit.export.int8 import METHODS

        METHODS.get(calib_method)

    # Data and model next, checked against each other: still nothing written.
    check_spec = data or calib_data
    ds = load_dataset(with_split(check_spec, "test")).subset(samples) if check_spec else None
    calib = (prec.calibration_from_spec(calib_data, calib_samples, method=calib_method, max_drop=max_drop)
             if precision == "int8" else None)
    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None,
                        trust_factory=trust_factory)
    check_input(built)
    check_compatible(model_classes(built.exported, built.example_input()), built.preprocess, ds)
    real = prec.preprocessed(ds.images, built.preprocess, 32) if ds is not None else []
    if calib is not None:
        prec.preprocessed(calib.images[:1], built.preprocess)  # the calibration images fit the model too

    # Every output is staged beside its destination and moved into place only when all are complete.
    result: dict[str, Any] = {}
    with staged() as stage:
        inputs = [built.example_input(1, seed=0), built.example_input(4, seed=1)]
        fp32_path, checked = export_checked(built, stage.scratch(onnx_path), onnx_path,
                                            inputs + [torch.from_numpy(x) for x in real], opset=opset)
        result.update(checked)
        result["real_data"] = ds is not None
        out(f"ONNX Runtime vs PyTorch (fp32): max abs diff {result['max_abs_diff']:.3g}, "
            f"max rel diff {result['max_rel_diff']:.3g}")
        result["precision"] = precision
        final = fp32_path
        if precision != "fp32":
            final = fp32_path.with_name("model.onnx")
            result.update(prec.convert(fp32_path, final, precision, calib))
            budget = result.get("calibration", {}).get("budget")
            if budget:
                out(f"int8 --max-drop {budget['max_drop']}: {len(budget['kept_float'])} layer(s) kept in float; "
                    f"held-out top-1 {budget['top1']:.2f} vs fp32 {budget['fp32_top1']:.2f} "
                    f"({budget['validation_images']} training images){'' if budget['met'] else ' (budget NOT met)'}")
            check_inputs = real or [x.numpy() for x in inputs]
            check = prec.verify(fp32_path, final, check_inputs, ds.labels if ds is not None else None)
            result["precision_check"] = {**check, "real_data": ds is not None}
            top1 = f", top-1 {check['top1']:.2f}% vs fp32 {check['top1_reference']:.2f}%" if "top1" in check else ""
            out(f"{precision} vs fp32 on ONNX Runtime ({check['n']} {'real' if ds is not None else 'random'} inputs): "
                f"max abs diff {check['max_abs_diff']:.3g}, top-1 agreement {check['top1_agreement']:.2f}%{top1}")
        # The sidecar first, then the model: a reader that finds the new model finds its description.
        stage.put(sidecar_path(final), sidecar_path(onnx_path))
        stage.put(final, onnx_path)
        result["onnx"] = str(onnx_path)

        if trt_path:
            from deploykit.runtime.trt import BuildConfig, build_engine

            engine = stage.scratch(trt_path) / "model.engine"
            # The timing cache only speeds up later builds: it is kept even when this run fails.
            info = build_engine(final, engine, BuildConfig(precision=precision,
                                                           timing_cache=trt_path.with_name(trt_path.name + ".timing")))
            info["engine"] = str(trt_path)
            sidecar_path(engine).write_text(json.dumps({**read_sidecar(final), "tensorrt": info}, indent=2) + "\n")
            stage.put(sidecar_path(engine), sidecar_path(trt_path))
            stage.put(engine, trt_path)
            result["trt"] = info

        if bundle:
            target, bundle_dir = bundle
            ref = real[0][:8] if real else np.concatenate([built.example_input(4, seed=2).numpy()])
            staged_bundle = stage.scratch(bundle_dir) / "bundle"
            manifest = write_bundle(target, final, staged_bundle, ref)
            stage.put(staged_bundle, bundle_dir, force=force)
            result["bundle"] = {"target": target, "dir": str(bundle_dir), "files": len(manifest["files"])}

    out(f"wrote {onnx_path} (opset {result['opset']}, {precision})")
    if trt_path:
        out(f"wrote {trt_path} (TensorRT {result['trt']['tensorrt']})")
    if bundle:
        out(f"wrote {bundle[0]} bundle {bundle[1]} (run {bundle[1] / 'run.sh'} on the device)")
    emit(result, json_path)


def _check_arguments(onnx_path: Path, opset: int, precision: str, calib_data: str | None, trt_path: Path | None,
                     bundle: tuple[str, Path] | None, force: bool, json_path: Path | None) -> None:
    """Every check that needs no model or data: arguments, output places, the GPU for --trt."""
    from deploykit.atomic import check_out_dir, check_writable
    from deploykit.errors import DeployKitError
    from deploykit.export import precision as prec
    from deploykit.export.bundle import BUNDLES
    from deploykit.export.onnx import check_opset, failed_path, sidecar_path

    check_opset(opset)
    prec.PRECISIONS.get(precision)
    if precision == "int8" and not calib_data:
        raise DeployKitError("--precision int8 needs --calib-data SPEC: real images to calibrate activation ranges")
    if bundle:
        BUNDLES.get(bundle[0])
    check_writable(onnx_path, "--onnx")
    outputs = {"--onnx": onnx_path, "the --onnx sidecar": sidecar_path(onnx_path), "--json": json_path}
    if trt_path:
        check_writable(trt_path, "--trt")
        outputs.update({"--trt": trt_path, "the --trt sidecar": sidecar_path(trt_path)})
    if bundle:
        check_out_dir(bundle[1], force, what="--bundle directory")
        outputs["--bundle"] = bundle[1]
    # Two outputs on one path would overwrite each other.
    seen: dict[str, str] = {os.path.abspath(failed_path(onnx_path)): "where a model failing the parity check is kept"}
    for flag, path in outputs.items():
        if path is None:
            continue
        where = os.path.abspath(path)
        if where in seen:
            raise DeployKitError(f"{flag} {path} is also {seen[where]}: give each output its own path")
        seen[where] = flag
    if trt_path:
        from deploykit.runtime.trt import trt_status

        status = trt_status()
        if not status.ok:
            # Refused before exporting: an ONNX file written for an engine that cannot be built is not asked for.
            raise DeployKitError(f"--trt needs a CUDA GPU with TensorRT and none is usable here ({status.reason}); "
                                 f"nothing was written: export without --trt (or with --bundle jetson DIR) and build "
                                 f"the engine on the target")
