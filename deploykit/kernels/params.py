"""The ctypes mirror of ``DkPreprocessParams`` and how a :class:`Preprocess` fills it."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.zoo.base import Preprocess

OUT_DTYPES = {"float32": 0, "float16": 1}  # DK_OUT_F32, DK_OUT_F16
COLORS = ("RGB", "BGR")


class PreprocessParams(ctypes.Structure):
    """Field for field the C struct in ``kernels/include/deploykit/preprocess.h``."""

    _fields_ = [
        ("src_row_stride", ctypes.c_longlong),
        ("src_image_stride", ctypes.c_longlong),
        ("src_h", ctypes.c_int),
        ("src_w", ctypes.c_int),
        ("src_c", ctypes.c_int),
        ("swap_rb", ctypes.c_int),
        ("out_c", ctypes.c_int),
        ("out_h", ctypes.c_int),
        ("out_w", ctypes.c_int),
        ("out_dtype", ctypes.c_int),
        ("top", ctypes.c_int),
        ("left", ctypes.c_int),
        ("content_h", ctypes.c_int),
        ("content_w", ctypes.c_int),
        ("pad_value", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("mean", ctypes.c_float * 4),
        ("std", ctypes.c_float * 4),
    ]


@dataclass(frozen=True)
class Geometry:
    """Where the resized image lands in the output: ``top, left, height, width``."""

    top: int
    left: int
    height: int
    width: int


def letterbox_geometry(src_h: int, src_w: int, out_h: int, out_w: int, letterbox: bool) -> Geometry:
    """Fit ``src`` inside ``out`` keeping its aspect ratio (centred) or stretch it.

    The scaled size rounds to the nearest pixel and the padding splits with the extra
    pixel at the bottom/right, as YOLO-style letterboxing does.
    """
    if not letterbox:
        return Geometry(0, 0, out_h, out_w)
    r = min(out_h / src_h, out_w / src_w)
    h, w = max(1, min(out_h, round(src_h * r))), max(1, min(out_w, round(src_w * r)))
    return Geometry((out_h - h) // 2, (out_w - w) // 2, h, w)


def check_images(images: np.ndarray) -> np.ndarray:
    """A uint8 NHWC batch (an HWC image becomes a batch of one); bad input is a user error."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise DeployKitError(f"images must be uint8 HWC or NHWC arrays, got {arr.dtype} of shape {arr.shape}")
    if arr.shape[-1] not in (1, 3, 4):
        raise DeployKitError(f"images must have 1, 3 or 4 channels (HWC), got shape {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DeployKitError(f"images must not be empty, got shape {arr.shape}")
    # Pixels must be packed (channel stride 1, pixel stride C); rows may be padded.
    if arr.strides[3] != 1 or arr.strides[2] != arr.shape[3]:
        arr = np.ascontiguousarray(arr)
    return arr


def make_params(
    images: np.ndarray,
    pre: Preprocess,
    out_dtype: str = "float32",
    color: str = "RGB",
    letterbox: bool = False,
    pad_value: float = 114.0,
) -> PreprocessParams:
    """Fill the kernel parameters for a checked uint8 NHWC batch (see :func:`check_images`)."""
    if out_dtype not in OUT_DTYPES:
        raise DeployKitError(f"unknown output dtype {out_dtype!r}; valid: {', '.join(OUT_DTYPES)}")
    if color not in COLORS:
        raise DeployKitError(f"unknown color order {color!r}; valid: {', '.join(COLORS)}")
    n, h, w, c = images.shape
    if pre.channels not in (1, 3) or (c != 1 and pre.channels != 3) or len(pre.mean) != pre.channels:
        raise DeployKitError(f"cannot feed {c}-channel images to a {pre.channels}-channel model")
    out_h, out_w = pre.size
    g = letterbox_geometry(h, w, out_h, out_w, letterbox)
    p = PreprocessParams()
    p.src_row_stride, p.src_image_stride = images.strides[1], images.strides[0]
    p.src_h, p.src_w, p.src_c = h, w, c
    p.swap_rb = int(c >= 3 and color != pre.color)
    p.out_c, p.out_h, p.out_w, p.out_dtype = pre.channels, out_h, out_w, OUT_DTYPES[out_dtype]
    p.top, p.left, p.content_h, p.content_w = g.top, g.left, g.height, g.width
    p.pad_value, p.scale = pad_value, pre.scale
    for i in range(pre.channels):
        p.mean[i], p.std[i] = pre.mean[i], pre.std[i]
    return p
