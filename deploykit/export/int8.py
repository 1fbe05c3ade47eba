"""INT8 Q/DQ graphs that keep accuracy: calibration methods, a per-layer sensitivity
report, and the layers kept in float chosen automatically under a top-1 budget.

The graph is ONNX Runtime's QDQ format (symmetric int8 activations per tensor, symmetric
per-channel int8 weights, float biases: what TensorRT's explicit quantization reads).
What decides its accuracy is how each activation's range is calibrated and which layers
are quantized at all:

``minmax``      the largest magnitude seen: no clipping, so one outlier image wastes the
                range (which 256 images calibrate changes top-1 by up to a point);
``entropy``     TensorRT's entropy calibration: on a 2048-bin histogram of ``|x|``, the
                threshold whose 128-level quantization loses the least information (KL
                divergence); ONNX Runtime collects the histogram, :func:`kl_threshold`
                searches it (ONNX Runtime's own entropy search, at its defaults, has a
                single candidate, the full range; at TensorRT's sizes it clipped ResNet-20's
                activations to 1/8 of their range and cost 45 points of top-1);
``percentile``  the magnitude at the 99.999th percentile of ``|x|`` (the default: robust to
                outlier images, cheap; see benchmarks/results/precision.md).

With ``max_drop``, the whole graph is quantized first and its top-1 measured against the
FP32 model on held-out *training* images (never the test set). Past the budget, each
weight layer's sensitivity is measured by leaving it alone in float (the drop in mean KL
divergence of the softmax from FP32's on a sensitivity subset), and layers are kept in
float, most sensitive first, until the held-out drop is within the budget. Kept layers
stay float32 in the graph (TensorRT 8.x with ``--fp16`` may run them in FP16; strongly
typed 10+ runs them in FP32).

Ranges are calibrated once per conversion: ONNX Runtime's calibration cache
(``calibration_cache_path``, where the installed version has it) lets every later
quantization reuse them.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.registry import Registry
from deploykit.zoo.base import Preprocess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """An ONNX Runtime calibration method and the options deploykit gives its calibrator.

    ``calibrator`` options go to ``create_calibrator`` directly (deploykit calibrates once
    and hands the ranges to ``quantize_static`` through its calibration cache), because
    ``quantize_static`` passes no histogram sizes: with its default 128 bins and 128
    quantized bins the entropy search has a single candidate, the full range, and entropy
    calibration silently equals minmax.
    """

    ort_name: str  # onnxruntime.quantization.CalibrationMethod member
    calibrator: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    # The threshold from the collected |x| histogram (counts, bin edges), instead of the calibrator's own.
    threshold: Callable[[np.ndarray, np.ndarray], float] | None = None


def kl_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """TensorRT's entropy calibration on a histogram of ``|x|``.

    For every candidate threshold from ``levels`` bins up, the clipped distribution P (the
    mass beyond the threshold added to its last bin) is compared with Q, P merged into
    ``levels`` quantization levels and spread back evenly over the non-empty bins of each
    level; the threshold of the smallest KL(P || Q) wins (the largest, on ties). The first
    bin is set to the second's count first, as in NVIDIA's calibrator.

    Args:
        hist: counts of ``|x|`` per bin.
        edges: the ``len(hist) + 1`` bin edges, from 0.
        levels: quantization levels of one sign (128 for int8).

    Returns:
        The threshold (a bin's upper edge); the largest edge when there are at most ``levels`` bins.
    """
    hist = np.array(hist, dtype=np.float64)
    # The first bin holds every exact zero a ReLU writes: a spike that would pull every
    # threshold down to the smallest candidate. TensorRT's calibrator flattens it the same way.
    if len(hist) > 1:
        hist[0] = hist[1]
    n = len(hist)
    if n <= levels or hist.sum() == 0:
        return float(edges[-1])
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i]: the mass from bin i on
    best, best_kl = n, np.inf
    for i in range(levels, n + 1):
        p = hist[:i].copy()
        if i < n:
            p[-1] += tail[i]
        level = np.arange(i) * levels // i  # which quantization level each bin merges into
        used = hist[:i] != 0
        mass = np.bincount(level, weights=hist[:i], minlength=levels)
        count = np.bincount(level, weights=used, minlength=levels)
        q = np.where(used, mass[level] / np.maximum(count[level], 1), 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        p, q = p / p_sum, q / q_sum
        nz = p > 0
        kl = np.inf if np.any(q[nz] == 0) else float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
        if kl <= best_kl:
            best, best_kl = i, kl
    return float(edges[best])


METHODS: Registry[Method] = Registry("calibration method")
METHODS.register("minmax", Method("MinMax", {"symmetric": True}, "largest magnitude seen"))
# Entropy: ONNX Runtime's percentile collector gathers the |x| histogram; kl_threshold searches it.
METHODS.register("entropy", Method("Percentile", {"symmetric": True, "num_bins": 2048, "percentile": 100.0},
                                   "TensorRT's KL-optimal threshold of a 2048-bin |x| histogram",
                                   threshold=kl_threshold))
METHODS.register("percentile", Method("Percentile", {"symmetric": True, "num_bins": 2048, "percentile": 99.999},
                                      "99.999th percentile of |x|"))
DEFAULT_METHOD = "percentile"  # the evidence: benchmarks/results/precision.md and the README
WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


@dataclass
class Validation:
    """Labelled held-out images (from the training split) that measure the top-1 drop."""

    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray
    sensitivity_samples: int = 500  # the subset the per-layer report runs on


def reader(pre: Preprocess, images: np.ndarray, batch_size: int, input_name: str) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` over preprocessed batches of ``images``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = self._batches()

        def _batches(self) -> Iterator[dict[str, np.ndarray]]:
            from deploykit.kernels import cpu_backend

            kernels = cpu_backend()
            for start in range(0, len(images), batch_size):
                yield {input_name: kernels.preprocess(images[start : start + batch_size], pre)}

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return _Reader()


class Quantizer:
    """Quantizes one prepared FP32 graph repeatedly (other layers excluded each time),
    with its activation ranges calibrated once."""

    def __init__(self, src: Path, workdir: Path, pre: Preprocess, images: np.ndarray, method: str,
                 batch_size: int = 32, extra: dict[str, Any] | None = None, input_name: str = "input") -> None:
        from onnxruntime.quantization import quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.method = METHODS.get(method)
        self.method_name = method
        self.workdir, self.pre, self.images, self.batch_size = workdir, pre, images, batch_size
        self.extra, self.input_name = dict(extra or {}), input_name
        self.prepared = workdir / "prepared.onnx"
        # Shape inference and constant folding first, as ONNX Runtime recommends.
        quant_pre_process(str(src), str(self.prepared), skip_symbolic_shape=True)
        self._cache = workdir / "calibration.json"
        self._cached = "calibration_cache_path" in inspect.signature(quantize_static).parameters
        if self._cached:
            self._calibrate()
        else:
            log.warning("this onnxruntime has no calibration cache: %s calibration uses quantize_static's defaults",
                        method)

    def _calibrate(self) -> None:
        """Activation ranges, once, with the method's own histogram settings, into the cache."""
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import TensorData, create_calibrator, save_tensors_data
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        calibrator = create_calibrator(
            self.prepared, sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),  # quantize_static's default op types
            augmented_model_path=str(self.workdir / "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, self.method.ort_name),
            extra_options=dict(self.method.calibrator))
        calibrator.collect_data(reader(self.pre, self.images, self.batch_size, self.input_name))
        data = calibrator.compute_data()
        if self.method.threshold is not None:
            for name, (hist, edges, *_) in calibrator.collector.histogram_dict.items():
                t = np.float32(self.method.threshold(hist, edges))
                data[name] = TensorData(lowest=-t, highest=t, hist=hist, hist_edges=edges.astype(np.float32))
        save_tensors_data(data, self._cache)
        del calibrator

    def weight_nodes(self) -> list[tuple[str, str]]:
        """``(name, op)`` of every weight layer the quantizer would quantize, in graph order."""
        import onnx

        return [(n.name, n.op_type) for n in onnx.load(str(self.prepared)).graph.node if n.op_type in WEIGHT_OPS]

    def quantize(self, dst: Path, exclude: tuple[str, ...] = ()) -> None:
        """Write the QDQ graph with the ``exclude`` nodes left in float."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        kwargs: dict[str, Any] = {}
        if self._cached:
            kwargs["calibration_cache_path"] = str(self._cache)
        quantize_static(
            str(self.prepared), str(dst), reader(self.pre, self.images, self.batch_size, self.input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, self.method.ort_name),
            nodes_to_exclude=list(exclude),
            extra_options={
                "ActivationSymmetric": True,  # TensorRT: zero point 0
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT quantizes no bias: keep them float
                "CalibTensorRangeSymmetric": True,
                **self.extra,
            },
            **kwargs,
        )


def _logits(path: Path, inputs: list[np.ndarray], input_name: str) -> np.ndarray:
    from deploykit.export.onnx import ort_session

    sess = ort_session(path)
    return np.concatenate([sess.run(None, {input_name: x})[0].astype(np.float32) for x in inputs])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mean_kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over samples of KL(softmax(reference) || softmax(candidate))."""
    p, q = _log_softmax(reference), _log_softmax(candidate)
    return float((np.exp(p) * (p - q)).sum(axis=1).mean())


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(1) == labels).mean())


@dataclass
class Selection:
    """What the budgeted quantization decided and measured."""

    kept_float: list[str]
    fp32_top1: float
    int8_top1: float
    all_int8_top1: float
    sensitivity: list[dict[str, Any]]
    met: bool

    def to_dict(self, max_drop: float, n: int) -> dict[str, Any]:
        return {"max_drop": max_drop, "validation_images": n, "fp32_top1": round(self.fp32_top1, 3),
                "all_int8_top1": round(self.all_int8_top1, 3), "top1": round(self.int8_top1, 3),
                "drop": round(self.fp32_top1 - self.int8_top1, 3), "met": self.met,
                "kept_float": self.kept_float, "sensitivity": self.sensitivity}


def sensitivity(q: Quantizer, src: Path, inputs: list[np.ndarray], progress: Callable[[str], None] | None = None,
                ) -> list[dict[str, Any]]:
    """Per weight layer: mean KL from FP32 with everything quantized, and with that layer left in float.

    Returns rows sorted most sensitive first (largest KL recovered by keeping it in float).
    """
    ref = _logits(src, inputs, q.input_name)
    all_path = q.workdir / "all.onnx"
    q.quantize(all_path)
    base = mean_kl(ref, _logits(all_path, inputs, q.input_name))
    rows = []
    for i, (name, op) in enumerate(q.weight_nodes()):
        path = q.workdir / "leave_one_out.onnx"
        q.quantize(path, (name,))
        kl = mean_kl(ref, _logits(path, inputs, q.input_name))
        rows.append({"node": name, "op": op, "kl_all_int8": round(base, 6), "kl_without": round(kl, 6),
                     "recovered": round(base - kl, 6)})
        if progress:
            progress(f"sensitivity {i + 1}: {name} recovers {base - kl:.4g} of KL {base:.4g}")
    return sorted(rows, key=lambda r: -r["recovered"])


def quantize_within(q: Quantizer, src: Path, dst: Path, validation: Validation, max_drop: float,
                    progress: Callable[[str], None] | None = None) -> Selection:
    """Quantize ``src`` to ``dst`` keeping the fewest layers in float that hold the held-out
    top-1 drop within ``max_drop`` points (all layers quantized when that already does)."""
    from deploykit.export.precision import preprocessed

    if max_drop < 0:
        raise DeployKitError(f"--max-drop must be >= 0 points of top-1, got {max_drop}")
    inputs = preprocessed(validation.images, q.pre, 250)
    labels = validation.labels
    fp32 = top1(_logits(src, inputs, q.input_name), labels)
    q.quantize(dst)
    all_int8 = top1(_logits(dst, inputs, q.input_name), labels)
    if fp32 - all_int8 <= max_drop:
        return Selection([], fp32, all_int8, all_int8, [], True)
    k = max(1, min(validation.sensitivity_samples, len(validation.images)))
    rows = sensitivity(q, src, preprocessed(validation.images[:k], q.pre, 250), progress)
    kept: list[str] = []
    current = all_int8
    candidate = dst
    for row in rows:
        kept.append(row["node"])
        candidate = q.workdir / "candidate.onnx"
        q.quantize(candidate, tuple(kept))
        current = top1(_logits(candidate, inputs, q.input_name), labels)
        if progress:
            progress(f"{len(kept)} layer(s) in float: top-1 {current:.2f} vs fp32 {fp32:.2f}")
        if fp32 - current <= max_drop:
            shutil.copyfile(candidate, dst)
            return Selection(kept, fp32, current, all_int8, rows, True)
    if candidate != dst:
        shutil.copyfile(candidate, dst)
    return Selection(kept, fp32, current, all_int8, rows, False)


def convert_int8(src: Path, dst: Path, pre: Preprocess, images: np.ndarray, method: str = DEFAULT_METHOD,
                 batch_size: int = 32, extra: dict[str, Any] | None = None, exclude: tuple[str, ...] = (),
                 validation: Validation | None = None, max_drop: float | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the INT8 QDQ graph of ``src`` to ``dst``; see the module docstring.

    Returns:
        The sidecar's ``calibration`` details (method, samples, kept layers, and with
        ``max_drop`` the held-out measurements and the sensitivity report).
    """
    if max_drop is not None and validation is None:
        raise DeployKitError("--max-drop needs held-out labelled images to measure the drop on")
    with tempfile.TemporaryDirectory(prefix="dk-int8-", dir=dst.parent) as tmp:
        q = Quantizer(src, Path(tmp), pre, images, method, batch_size, extra)
        details: dict[str, Any] = {"method": method, "samples": int(len(images)),
                                   "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel"}
        if max_drop is None:
            q.quantize(dst, tuple(exclude))
            details["kept_float"] = list(exclude)
            return details
        sel = quantize_within(q, src, dst, validation, float(max_drop), progress)
        details["kept_float"] = sel.kept_float
        details["budget"] = sel.to_dict(float(max_drop), int(len(validation.images)))
        if not sel.met:
            log.warning("INT8 stays %.2f points below FP32 on the held-out images with %d layer(s) in float",
                        sel.fp32_top1 - sel.int8_top1, len(sel.kept_float))
        return details
