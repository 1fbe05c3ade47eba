"""Export to ONNX and verify it against PyTorch in ONNX Runtime.

The TorchScript-based exporter is chosen deliberately: on torch 2.14 the default
(dynamo) exporter writes opset 18 when asked for 17 on most torchvision models,
and prints a traceback while doing so. The opset actually written is read back
from the file and reported.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.atomic import atomic_file, write_json
from deploykit.errors import DeployKitError
from deploykit.export.sidecar import read_sidecar, sidecar_path  # noqa: F401 - re-exported: imports keep working
from deploykit.zoo.base import BuiltModel

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4


def export_onnx(built: BuiltModel, path: str | Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True) -> dict[str, Any]:
    """Export ``built`` to ``path`` (atomically), run onnx.checker, write the sidecar.

    Returns:
        ``{"onnx": path, "opset": written opset}``.
    """
    import onnx

    if not 7 <= opset <= 22:
        raise DeployKitError(f"opset {opset} is not supported; valid: 7..22 (default {DEFAULT_OPSET})")
    model = built.exported.eval()
    example = built.example_input()
    with torch.no_grad():
        n_out = len(_flat(model(example)))
    outputs = [OUTPUT_NAME] if n_out == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    with atomic_file(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    write_json(
        sidecar_path(path),
        {
            "source": built.spec,
            "base_spec": built.base_spec or built.spec,
            "input_shape": list(built.input_shape),
            "input": INPUT_NAME,
            "output": outputs[0],
            "outputs": outputs,
            "task": built.task,
            "opset": written,
            "preprocess": built.preprocess.to_dict(),
            "labels": built.labels,
        },
    )
    return {"onnx": str(path), "opset": written}


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise DeployKitError(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a file ORT cannot load is bad input
        raise DeployKitError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:200]}") from None


def max_diffs(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Max absolute difference, and that divided by the reference's max magnitude.

    The relative figure is scale-normalized (not element-wise), so logits near
    zero do not make it explode.
    """
    abs_diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
    return abs_diff, abs_diff / max(float(np.max(np.abs(ref))), 1e-12)


def _flat(out: object) -> list[torch.Tensor]:
    """A model's outputs as a flat list (a tensor, a tuple/list, or a dict's values)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _flat(o)]


@torch.no_grad()
def check_parity(model: nn.Module, onnx_path: str | Path, inputs: list[torch.Tensor]) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on the same inputs; report the worst differences over every output."""
    sess = ort_session(onnx_path)
    model.eval()
    worst_abs = worst_rel = 0.0
    for x in inputs:
        refs = [t.numpy() for t in _flat(model(x))]
        gots = sess.run(None, {INPUT_NAME: x.numpy()})
        for ref, got in zip(refs, gots, strict=True):
            if ref.shape != got.shape:
                raise DeployKitError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
            a, r = max_diffs(ref, got)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel}
