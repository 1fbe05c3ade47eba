"""NumPy formulations of the kernel math: the tests' reference and the CPU fallback.

Written independently of the C headers (vectorized, whole arrays at a time) so that
comparing the two checks the kernels, not a copy of them. The Engine uses these only
when no C++ compiler is available to build the host library.
"""

from __future__ import annotations

import numpy as np

from deploykit.runtime.kernels.params import check_images, letterbox_geometry
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
