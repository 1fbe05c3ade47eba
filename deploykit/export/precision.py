"""Precision in the ONNX graph: FP16 casts and INT8 Q/DQ nodes, verified against FP32.

TensorRT 11 builds strongly typed networks only: the FP16/INT8 builder flags and INT8
calibrators are gone, and the precision of every tensor is read from the ONNX graph.
So deploykit writes the precision into the graph itself, in forms every runtime reads:

``fp16``  weights and activations in float16, inputs/outputs kept float32 (casts at the
          edges), numerically sensitive ops kept in float32 (:data:`FP16_KEEP_FP32`).
``int8``  QuantizeLinear/DequantizeLinear pairs (ONNX Runtime's quantizer, QDQ format):
          symmetric int8 activations calibrated on real images, symmetric per-channel
          int8 weights, float biases: the explicit-quantization form TensorRT consumes.
          Calibration methods, the per-layer sensitivity report and the layers kept in
          float under a top-1 budget are in :mod:`deploykit.export.int8`.

Each conversion is checked on ONNX Runtime (CPU) against the FP32 file on the same
inputs: max difference and top-1 agreement go into the JSON result.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.atomic import atomic_file, write_json
from deploykit.errors import DeployKitError
from deploykit.export.onnx import INPUT_NAME, max_diffs, ort_session, read_sidecar, sidecar_path
from deploykit.registry import Registry
from deploykit.zoo.base import Preprocess

# Ops whose float16 versions lose accuracy (long reductions, exponentials, normalizers)
# or that ONNX Runtime's converter already keeps in float32.
FP16_KEEP_FP32 = (
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div",
    "ReduceMean", "ReduceSum", "ReduceL2", "ReduceLogSumExp",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "TopK", "NonMaxSuppression", "Range", "CumSum", "Resize", "Upsample", "RoiAlign",
)


@dataclass
class Calibration:
    """Real images that calibrate INT8 activation ranges.

    Attributes:
        images: uint8 NHWC images (a train split, not the images used for evaluation).
        batch_size: images per calibration batch.
        method: ``minmax``, ``entropy`` or ``percentile`` (ONNX Runtime's calibrators;
            the default is chosen by the evidence, see :data:`deploykit.export.int8.DEFAULT_METHOD`).
        spec: the DATA spec they came from (recorded in the sidecar).
        exclude: ONNX node names left in float.
        max_drop: top-1 points the INT8 graph may lose on ``validation``; layers are kept in
            float, most sensitive first, until it holds (None: quantize every layer).
        validation: held-out labelled training images for ``max_drop``.
    """

    images: np.ndarray
    batch_size: int = 32
    method: str = field(default_factory=lambda: _default_method())
    spec: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    max_drop: float | None = None
    validation: Any = None  # deploykit.export.int8.Validation


def _default_method() -> str:
    from deploykit.export.int8 import DEFAULT_METHOD

    return DEFAULT_METHOD


Converter = Callable[[Path, Path, Preprocess, "Calibration | None"], dict[str, Any]]
PRECISIONS: Registry[Converter] = Registry("precision")


@PRECISIONS.register("fp32")
def _fp32(src: Path, dst: Path, pre: Preprocess, calib: Calibration | None) -> dict[str, Any]:
    shutil.copyfile(src, dst)
    return {}


@PRECISIONS.register("fp16")
def _fp16(src: Path, dst: Path, pre: Preprocess, calib: Calibration | None) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_FP32))
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=blocked)
    # The converter appends the input casts at the end of the node list; ONNX (and
    # TensorRT's parser, which reads nodes in order) need topological order.
    toposort(model.graph)
    onnx.save(model, str(dst))
    present = {n.op_type for n in model.graph.node}
    return {"kept_fp32_ops": sorted(present & set(blocked))}


def toposort(graph) -> None:
    """Reorder ``graph.node`` topologically in place (stable: keeps the order where it can)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise DeployKitError("the converted graph has a cycle or an undefined input")
        for n in ready:
            available.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


@PRECISIONS.register("int8")
def _int8(src: Path, dst: Path, pre: Preprocess, calib: Calibration | None) -> dict[str, Any]:
    from deploykit.export.int8 import METHODS, convert_int8

    if calib is None or len(calib.images) == 0:
        raise DeployKitError("int8 needs real calibration images: pass --calib-data SPEC (e.g. cifar10:DIR:train)")
    METHODS.get(calib.method)  # an unknown method is one line listing the valid ones
    details = convert_int8(src, dst, pre, calib.images, calib.method, calib.batch_size, calib.extra, calib.exclude,
                           calib.validation, calib.max_drop)
    return {"calibration": {"data": calib.spec, **details}}


def convert(src: str | Path, dst: str | Path, precision: str, calib: Calibration | None = None) -> dict[str, Any]:
    """Write ``dst``: the FP32 ONNX ``src`` in ``precision``, with a sidecar.

    The file and its sidecar are written atomically; on any error neither exists.

    Returns:
        ``{"precision": ..., **details}`` (kept ops, calibration).
    """
    convert_fn = PRECISIONS.get(precision)
    side = read_sidecar(src)
    pre = Preprocess.from_dict(side["preprocess"])
    with atomic_file(dst) as tmp:
        details = convert_fn(Path(src), tmp, pre, calib)
        _check_loads(tmp)
    write_json(sidecar_path(dst), {**side, "precision": precision, **details})
    return {"precision": precision, **details}


def _check_loads(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))
    ort_session(path)  # raises DeployKitError when ONNX Runtime cannot load it


def verify(reference: str | Path, candidate: str | Path, inputs: list[np.ndarray],
           labels: np.ndarray | None = None) -> dict[str, Any]:
    """Compare ``candidate`` with the FP32 ``reference`` on ONNX Runtime (CPU).

    Args:
        inputs: preprocessed NCHW float32 batches.
        labels: ground truth for the concatenated batches, when known.

    Returns:
        max_abs_diff, max_rel_diff (scale-normalized), top1_agreement (% of images whose
        top-1 class is the same), and top1 / top1_reference (%) when labels are given.
    """
    ref_sess, cand_sess = ort_session(reference), ort_session(candidate)
    ref_out, cand_out = [], []
    for x in inputs:
        ref_out.append(ref_sess.run(None, {INPUT_NAME: x})[0])
        cand_out.append(cand_sess.run(None, {INPUT_NAME: x})[0].astype(np.float32))
    ref, cand = np.concatenate(ref_out), np.concatenate(cand_out)
    abs_diff, rel_diff = max_diffs(ref, cand)
    same = ref.argmax(1) == cand.argmax(1)
    result: dict[str, Any] = {"n": int(len(ref)), "max_abs_diff": abs_diff, "max_rel_diff": rel_diff,
                              "top1_agreement": round(100.0 * float(same.mean()), 3)}
    if labels is not None:
        result["top1_reference"] = round(100.0 * float((ref.argmax(1) == labels).mean()), 3)
        result["top1"] = round(100.0 * float((cand.argmax(1) == labels).mean()), 3)
    return result


def calibration_from_spec(spec: str, samples: int, seed: int = 0, method: str | None = None,
                          max_drop: float | None = None, validation_samples: int = 1000) -> Calibration:
    """``samples`` images drawn (seeded, without replacement) from the train split of ``spec``;
    with ``max_drop``, ``validation_samples`` other labelled images of that split measure the drop."""
    from deploykit.data import load_dataset
    from deploykit.data.splits import with_split
    from deploykit.export.int8 import DEFAULT_METHOD, METHODS, Validation

    if samples < 1:
        raise DeployKitError(f"--calib-samples must be at least 1, got {samples}")
    method = method or DEFAULT_METHOD
    METHODS.get(method)
    train = with_split(spec, "train")
    ds = load_dataset(train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))
    idx = np.sort(order[: min(samples, len(ds))])
    validation = None
    if max_drop is not None:
        held_out = np.sort(order[len(idx) : len(idx) + validation_samples])
        if len(held_out) < 100:
            raise DeployKitError(f"--max-drop needs at least 100 held-out images in {train} besides the "
                                 f"{len(idx)} calibration images; it has {len(held_out)}")
        validation = Validation(ds.images[held_out], ds.labels[held_out])
    return Calibration(images=ds.images[idx], method=method, spec=train, max_drop=max_drop, validation=validation)


def preprocessed(images: np.ndarray, pre: Preprocess, batch_size: int = 64) -> list[np.ndarray]:
    """uint8 NHWC images → list of preprocessed NCHW float32 batches (the kernels' CPU path)."""
    from deploykit.kernels import cpu_backend

    kernels = cpu_backend()
    return [kernels.preprocess(images[i : i + batch_size], pre) for i in range(0, len(images), batch_size)]
