"""NumPy formulations of the kernel math: the tests' reference and the CPU fallback.

Written independently of the C headers (vectorized, whole arrays at a time) so that
comparing the two checks the kernels, not a copy of them. The Engine uses these only
when no C++ compiler is available to build the host library.
"""

from __future__ import annotations

import numpy as np

from deploykit.kernels.params import check_images, letterbox_geometry
from deploykit.zoo.base import Preprocess


def source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR / torch bilinear (align_corners=False) source indices and weights."""
    ratio = np.float32(in_size) / np.float32(out_size)
    s = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * ratio - np.float32(0.5)
    s = np.maximum(s, np.float32(0.0))
    i0 = np.minimum(np.floor(s).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = np.where(i1 == i0, np.float32(0.0), s - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, frac


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of an HWC image to float32 HWC (pixel units)."""
    y0, y1, fy = source_index(out_h, img.shape[0])
    x0, x1, fx = source_index(out_w, img.shape[1])
    f = img.astype(np.float32)
    fx_, fy_ = fx[None, :, None], fy[:, None, None]
    top = (1 - fx_) * f[y0][:, x0] + fx_ * f[y0][:, x1]
    bottom = (1 - fx_) * f[y1][:, x0] + fx_ * f[y1][:, x1]
    return ((1 - fy_) * top + fy_ * bottom).astype(np.float32)


def preprocess(
    images: np.ndarray,
    pre: Preprocess,
    out_dtype: str = "float32",
    color: str = "RGB",
    letterbox: bool = False,
    pad_value: float = 114.0,
) -> np.ndarray:
    """uint8 NHWC (or HWC) → normalized NCHW, the contract of the preprocessing kernel."""
    batch = check_images(images)
    n, h, w, c = batch.shape
    out_h, out_w = pre.size
    g = letterbox_geometry(h, w, out_h, out_w, letterbox)
    out = np.empty((n, pre.channels, out_h, out_w), dtype=np.float32)
    for i in range(n):
        img = batch[i, :, :, : min(c, 3)]
        if c >= 3 and color != pre.color:
            img = img[:, :, ::-1]
        if img.shape[2] == 1 and pre.channels == 3:
            img = np.repeat(img, 3, axis=2)
        canvas = np.full((out_h, out_w, pre.channels), np.float32(pad_value), dtype=np.float32)
        canvas[g.top : g.top + g.height, g.left : g.left + g.width] = resize_bilinear(img, g.height, g.width)
        mean = np.asarray(pre.mean, dtype=np.float32)
        std = np.asarray(pre.std, dtype=np.float32)
        out[i] = ((canvas / np.float32(pre.scale) - mean) / std).transpose(2, 0, 1)
    return out.astype(out_dtype)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (the reference is more precise than the kernel)."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k softmax scores (descending) and indices (ties: lower index first)."""
    probs = softmax(np.asarray(logits, dtype=np.float32))
    order = np.argsort(-np.asarray(logits, dtype=np.float32), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(probs, order, axis=1).astype(np.float32), order.astype(np.int32)


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """Per-pixel class of an NCHW score map → int32 NHW."""
    return np.argmax(logits, axis=1).astype(np.int32)


def detect(pred: np.ndarray, geometry: np.ndarray, settings) -> list:
    """YOLO head decode + class-aware NMS (see ``kernels/include/deploykit/nms.h``), vectorized per image.

    Args:
        pred: ``[N, 4 + nc, A]`` head output (cx, cy, w, h, then class scores).
        geometry: ``[N, 6]`` letterbox geometry rows (:func:`~.detection.geometry_row`).
        settings: a :class:`~.detection.DetectSettings`.

    Returns:
        One :class:`~.detection.DetectionArrays` per image, best first.
    """
    from deploykit.kernels.detection import DetectionArrays, check_geometry, check_head

    x = check_head(pred)
    geom = check_geometry(geometry, x.shape[0])
    out = []
    for img, g in zip(x, geom):
        scores = img[4:]
        # Best class per anchor, NaN never picked (all-NaN anchors are no candidates).
        safe = np.where(np.isnan(scores), -np.inf, scores)
        cls = np.argmax(safe, axis=0)
        best = safe[cls, np.arange(img.shape[1])]
        cand = np.flatnonzero(best > np.float32(settings.conf))
        cand = cand[np.lexsort((cand, -best[cand]))][: settings.max_candidates]  # score desc, index asc
        half_w, half_h = np.float32(0.5) * img[2, cand], np.float32(0.5) * img[3, cand]
        boxes = np.stack([img[0, cand] - half_w, img[1, cand] - half_h, img[0, cand] + half_w, img[1, cand] + half_h], 1)
        c = cls[cand]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        alive = np.ones(len(cand), bool)
        keep: list[int] = []
        for i in range(len(cand)):
            if not alive[i]:
                continue
            keep.append(i)
            if len(keep) == settings.max_det:
                break
            b = boxes[i + 1 :]
            w = np.maximum(np.minimum(boxes[i, 2], b[:, 2]) - np.maximum(boxes[i, 0], b[:, 0]), np.float32(0))
            h = np.maximum(np.minimum(boxes[i, 3], b[:, 3]) - np.maximum(boxes[i, 1], b[:, 1]), np.float32(0))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = inter / (area[i] + area[i + 1 :] - inter)
            alive[i + 1 :] &= ~((c[i + 1 :] == c[i]) & (iou > np.float32(settings.iou)))
        k = np.asarray(keep, dtype=np.int64)
        top, left, sy, sx, src_h, src_w = (np.float32(v) for v in g)
        kb = boxes[k]
        mapped = np.stack([np.clip((kb[:, 0] - left) * sx, 0, src_w), np.clip((kb[:, 1] - top) * sy, 0, src_h),
                           np.clip((kb[:, 2] - left) * sx, 0, src_w), np.clip((kb[:, 3] - top) * sy, 0, src_h)], 1)
        out.append(DetectionArrays(mapped.astype(np.float32).reshape(-1, 4), best[cand][k].astype(np.float32),
                                   c[k].astype(np.int32)))
    return out
