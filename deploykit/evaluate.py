"""Top-1 accuracy of whatever the user points at: a spec, an artifact or an ONNX file."""

from __future__ import annotations

import numpy as np

from deploykit.data import ImageDataset, batches, check_compatible, model_classes
from deploykit.zoo.base import Preprocess


def evaluate_onnx(path: str, ds: ImageDataset, batch_size: int = 256) -> float:
    """Top-1 of an ONNX file in ONNX Runtime, preprocessing from its sidecar."""
    from deploykit.export.onnx import INPUT_NAME, ort_session, read_sidecar

    pre = Preprocess.from_dict(read_sidecar(path)["preprocess"])
    sess = ort_session(path)
    check_compatible(model_classes(sess), pre, ds)
    correct = 0
    for x, y in batches(ds, pre, batch_size):
        logits = sess.run(None, {INPUT_NAME: x.numpy()})[0]
        correct += int((np.argmax(logits, 1) == y.numpy()).sum())
    return 100.0 * correct / max(len(ds), 1)


def evaluate_any(model: str, ds: ImageDataset, weights: str | None = None, input_shape: str | None = None) -> float:
    """Top-1 of a MODEL spec, artifact DIR or ``.onnx`` file."""
    if model.endswith(".onnx"):
        return evaluate_onnx(model, ds)
    from deploykit.train.loop import evaluate
    from deploykit.zoo import build_model, check_input, parse_shape

    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None)
    check_input(built)
    check_compatible(model_classes(built.model, built.example_input()), built.preprocess, ds)
    return evaluate(built.model, ds, built.preprocess)


def evaluate_runner(path: str, ds: ImageDataset, backend: str, batch_size: int = 64) -> float:
    """Top-1 of an ONNX file (any precision), engine file or bundle dir on a Runner backend
    (``ort``, ``trt``), preprocessing from the model's sidecar."""
    from pathlib import Path

    from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, read_sidecar
    from deploykit.runtime.backends import load_runner
    from deploykit.runtime.base import onnx_path_of

    p = Path(path)
    side_of = p if p.suffix in (".engine", ".plan") else onnx_path_of(p)
    pre = Preprocess.from_dict(read_sidecar(side_of)["preprocess"])
    check_compatible(None, pre, ds)
    correct = 0
    with load_runner(path, backend=backend) as runner:
        for x, y in batches(ds, pre, batch_size):
            logits = runner.infer({INPUT_NAME: x.numpy()})[OUTPUT_NAME]
            correct += int((np.argmax(logits, 1) == y.numpy()).sum())
    return 100.0 * correct / max(len(ds), 1)
