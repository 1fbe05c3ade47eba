"""What the detection kernels take and give: settings, the ctypes mirror of ``DkDetectParams``,
per-image letterbox geometry, and the checked head output.

The head is a YOLO head as Ultralytics' ``Detect`` exports it: ``[N, 4 + nc, A]`` float32,
rows 0..3 the box centre and size (cx, cy, w, h) in model-input pixels, rows 4.. sigmoid
class scores. Every backend (``host``, ``reference``, ``cuda``) implements
``detect(pred, geometry, settings) -> list[DetectionArrays]`` with the decisions described
in ``kernels/include/deploykit/nms.h``.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.kernels.params import Geometry

GEOMETRY_FIELDS = 6  # top, left, scale_y, scale_x, src_h, src_w (DK_GEOM_* in nms.h)


@dataclass(frozen=True)
class DetectSettings:
    """Thresholds of the detection postprocessing.

    Attributes:
        conf: an anchor's best class score must exceed this to be a candidate.
        iou: a candidate overlapping a kept box of its class with IoU above this is dropped.
        max_det: detections kept per image (the best by score).
        max_candidates: candidates (best by score) the suppression considers, as
            Ultralytics' ``max_nms``: bounds the work on an image full of weak boxes.

    Defaults are Ultralytics' ``predict`` defaults.
    """

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    max_candidates: int = 30000

    def __post_init__(self) -> None:
        for name in ("conf", "iou"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise DeployKitError(f"detection {name}={v!r}: give a number in [0, 1]")
        for name in ("max_det", "max_candidates"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 1 << 20:
                raise DeployKitError(f"detection {name}={v!r}: give a positive integer (at most {1 << 20})")


class DetectParams(ctypes.Structure):
    """Field for field the C struct ``DkDetectParams`` in ``kernels/include/deploykit/nms.h``."""

    _fields_ = [
        ("num_classes", ctypes.c_int),
        ("anchors", ctypes.c_int),
        ("max_candidates", ctypes.c_int),
        ("max_det", ctypes.c_int),
        ("conf", ctypes.c_float),
        ("iou", ctypes.c_float),
    ]


@dataclass(frozen=True)
class DetectionArrays:
    """The detections of one image, best first: ``boxes`` float32 ``[K, 4]`` (x1, y1, x2, y2
    in the original image's pixels), ``scores`` float32 ``[K]``, ``classes`` int32 ``[K]``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def check_head(pred: np.ndarray) -> np.ndarray:
    """A contiguous float32 ``[N, 4 + nc, A]`` head output (nc >= 1), or a user error."""
    x = np.ascontiguousarray(pred, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] < 5:
        raise DeployKitError(f"detection needs a YOLO head output [batch, 4 + classes, anchors], got shape {x.shape}")
    if x.shape[2] >= 1 << 31:
        raise DeployKitError(f"detection head has {x.shape[2]} anchors; at most {(1 << 31) - 1}")
    return x


def make_detect_params(pred: np.ndarray, settings: DetectSettings) -> DetectParams:
    """Fill the kernel parameters for a checked head output (see :func:`check_head`)."""
    p = DetectParams()
    p.num_classes, p.anchors = pred.shape[1] - 4, pred.shape[2]
    p.max_candidates, p.max_det = settings.max_candidates, settings.max_det
    p.conf, p.iou = settings.conf, settings.iou
    return p


def geometry_row(g: Geometry, src_h: int, src_w: int) -> list[float]:
    """One image's ``DK_GEOM_*`` row: offset of the resized image, original pixels per model pixel, clip size."""
    return [g.top, g.left, src_h / g.height, src_w / g.width, src_h, src_w]


def identity_geometry(batch: int, height: int, width: int) -> np.ndarray:
    """Geometry for boxes kept in model-input pixels (no letterbox to undo; clipped to the input)."""
    return np.tile(np.float32([0, 0, 1, 1, height, width]), (batch, 1))


def check_geometry(geometry: np.ndarray, batch: int) -> np.ndarray:
    """A contiguous float32 ``[batch, 6]`` geometry, or a user error."""
    g = np.ascontiguousarray(geometry, dtype=np.float32)
    if g.shape != (batch, GEOMETRY_FIELDS):
        raise DeployKitError(f"detection geometry must be [{batch}, {GEOMETRY_FIELDS}] (one row per image), got {g.shape}")
    return g


def split_outputs(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, counts: np.ndarray) -> list[DetectionArrays]:
    """``[N, max_det, ...]`` kernel outputs with per-image counts → one :class:`DetectionArrays` per image."""
    return [DetectionArrays(boxes[i, :k].copy(), scores[i, :k].copy(), classes[i, :k].copy())
            for i, k in enumerate(int(c) for c in counts)]
