"""The CUDA kernels on a GPU: compiled by NVRTC for the device's own SM, launched through
:mod:`deploykit.cuda`. Same signatures as the host backend (NumPy in and out);
:class:`DeviceKernels` also offers device-pointer variants for the TensorRT path, where
the preprocessed tensor never leaves the GPU.

When NVRTC cannot be loaded (cuda-python without ``[all]``) or cannot target this GPU,
the module-level functions fall back to the host build of the same kernels, saying so in
one logged line, instead of failing at the first image.

Not verified on hardware in this repository's CI (no GPU there): see the README.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from types import ModuleType

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.cuda import CudaApi, cuda_api, gpu_status
from deploykit.kernels.detection import (DetectionArrays, DetectSettings, check_geometry, check_head,
                                                 make_detect_params, split_outputs)
from deploykit.kernels.nvrtc import compile_cubin
from deploykit.kernels.params import check_images, make_params
from deploykit.zoo.base import Preprocess

log = logging.getLogger(__name__)

BLOCK_2D = (16, 16, 1)
BLOCK_1D = 256


class DeviceKernels:
    """Loaded kernel modules for one device, with helpers that take device pointers."""

    def __init__(self, api: CudaApi | None = None, device: int = 0) -> None:
        status = gpu_status()
        if not status.ok:
            raise DeployKitError(f"the cuda kernel backend needs a GPU: {status.reason}")
        self.api = api or cuda_api()
        major, minor = self.api.compute_capability(device)
        self.arch = major * 10 + minor
        pre_mod = self.api.load_module(compile_cubin("preprocess.cu", self.arch)[0])
        post_mod = self.api.load_module(compile_cubin("postprocess.cu", self.arch)[0])
        self._pre = self.api.function(pre_mod, "dk_preprocess")
        self._topk = self.api.function(post_mod, "dk_softmax_topk")
        self._argmax = self.api.function(post_mod, "dk_argmax_channels")
        nms_mod = self.api.load_module(compile_cubin("nms.cu", self.arch)[0])
        self._decode = self.api.function(nms_mod, "dk_detect_decode")
        self._rank = self.api.function(nms_mod, "dk_detect_rank")
        self._nms = self.api.function(nms_mod, "dk_detect_nms")
        self._modules = (pre_mod, post_mod, nms_mod)
        self._local = threading.local()

    def _stream(self):
        # One stream per thread: launches from several threads never share a stream.
        s = getattr(self._local, "stream", None)
        if s is None:
            s = self._local.stream = self.api.stream()
        return s

    def preprocess_ptr(self, params, src_ptr: int, dst_ptr: int, batch: int, stream=None) -> None:
        """Launch the preprocessing kernel on device buffers."""
        grid = (-(-params.out_w // BLOCK_2D[0]), -(-params.out_h // BLOCK_2D[1]), batch)
        self.api.launch(self._pre, grid, BLOCK_2D, [params, src_ptr, dst_ptr], stream or self._stream())

    def preprocess(self, images: np.ndarray, pre: Preprocess, out_dtype: str = "float32", color: str = "RGB",
                   letterbox: bool = False, pad_value: float = 114.0) -> np.ndarray:
        """Host arrays in and out; the batch is copied up, preprocessed and copied back."""
        batch = np.ascontiguousarray(check_images(images))
        params = make_params(batch, pre, out_dtype, color, letterbox, pad_value)
        out = np.empty((batch.shape[0], pre.channels, *pre.size), dtype=out_dtype)
        stream = self._stream()
        src, dst = self.api.malloc(batch.nbytes), self.api.malloc(out.nbytes)
        try:
            self.api.htod(src, batch, stream)
            self.preprocess_ptr(params, src, dst, batch.shape[0], stream)
            self.api.dtoh(out, dst, stream)
            self.api.synchronize(stream)
        finally:
            self.api.free(src)
            self.api.free(dst)
        return out

    def softmax_topk(self, logits: np.ndarray, k: int):
        """Top-k softmax scores and indices per row (see the host backend)."""
        x = np.ascontiguousarray(logits, dtype=np.float32)
        if x.ndim != 2 or not 1 <= k <= x.shape[1]:
            raise DeployKitError(f"softmax_topk needs [rows, classes] logits and 1 <= k <= classes, got {x.shape}, k={k}")
        rows, n = x.shape
        scores, idx = np.empty((rows, k), np.float32), np.empty((rows, k), np.int32)
        stream = self._stream()
        bufs = [self.api.malloc(a.nbytes) for a in (x, scores, idx)]
        try:
            self.api.htod(bufs[0], x, stream)
            grid = (-(-rows // BLOCK_1D), 1, 1)
            args = [bufs[0], ctypes.c_int(rows), ctypes.c_int(n), ctypes.c_int(k), bufs[1], bufs[2]]
            self.api.launch(self._topk, grid, (BLOCK_1D, 1, 1), args, stream)
            self.api.dtoh(scores, bufs[1], stream)
            self.api.dtoh(idx, bufs[2], stream)
            self.api.synchronize(stream)
        finally:
            for b in bufs:
                self.api.free(b)
        return scores, idx

    def argmax_channels(self, logits: np.ndarray) -> np.ndarray:
        """Per-pixel argmax over channels of NCHW scores → int32 NHW."""
        x = np.ascontiguousarray(logits, dtype=np.float32)
        if x.ndim != 4:
            raise DeployKitError(f"argmax_channels needs NCHW scores, got shape {x.shape}")
        n, c, h, w = x.shape
        labels = np.empty((n, h, w), np.int32)
        stream = self._stream()
        src, dst = self.api.malloc(x.nbytes), self.api.malloc(labels.nbytes)
        try:
            self.api.htod(src, x, stream)
            grid = (-(-(n * h * w) // BLOCK_1D), 1, 1)
            args = [src, ctypes.c_int(n), ctypes.c_int(c), ctypes.c_longlong(h * w), dst]
            self.api.launch(self._argmax, grid, (BLOCK_1D, 1, 1), args, stream)
            self.api.dtoh(labels, dst, stream)
            self.api.synchronize(stream)
        finally:
            self.api.free(src)
            self.api.free(dst)
        return labels


    def detect(self, pred: np.ndarray, geometry: np.ndarray, settings: DetectSettings) -> list[DetectionArrays]:
        """YOLO decode + class-aware NMS on the GPU (see the host backend): three launches per batch."""
        x = check_head(pred)
        n, _, anchors = x.shape
        geom = check_geometry(geometry, n)
        params = make_detect_params(x, settings)
        k, m = settings.max_det, settings.max_candidates
        boxes, scores = np.empty((n, k, 4), np.float32), np.empty((n, k), np.float32)
        classes, counts = np.empty((n, k), np.int32), np.empty(n, np.int32)
        stream = self._stream()
        sizes = {"pred": x.nbytes, "geom": geom.nbytes, "cand_box": n * anchors * 16, "cand_score": n * anchors * 4,
                 "cand_cls": n * anchors * 4, "order": n * m * 4, "removed": n * m, "boxes": boxes.nbytes,
                 "scores": scores.nbytes, "classes": classes.nbytes, "counts": counts.nbytes}
        buf = {name: self.api.malloc(max(size, 4)) for name, size in sizes.items()}
        try:
            self.api.htod(buf["pred"], x, stream)
            self.api.htod(buf["geom"], geom, stream)
            if anchors and n:
                grid = (-(-anchors // BLOCK_1D), n, 1)
                self.api.launch(self._decode, grid, (BLOCK_1D, 1, 1),
                                [params, buf["pred"], buf["cand_box"], buf["cand_score"], buf["cand_cls"]], stream)
                self.api.launch(self._rank, grid, (BLOCK_1D, 1, 1),
                                [params, buf["cand_score"], buf["cand_cls"], buf["order"]], stream)
            if n:
                self.api.launch(self._nms, (n, 1, 1), (BLOCK_1D, 1, 1),
                                [params, buf["geom"], buf["cand_box"], buf["cand_score"], buf["cand_cls"], buf["order"],
                                 buf["removed"], buf["boxes"], buf["scores"], buf["classes"], buf["counts"]], stream)
            for name, arr in (("boxes", boxes), ("scores", scores), ("classes", classes), ("counts", counts)):
                self.api.dtoh(arr, buf[name], stream)
            self.api.synchronize(stream)
        finally:
            for b in buf.values():
                self.api.free(b)
        return split_outputs(boxes, scores, classes, counts)


@functools.lru_cache(maxsize=1)
def kernels() -> DeviceKernels | ModuleType:
    """The process-wide kernels for device 0 (compiled and loaded once), or the host
    kernels when NVRTC is missing or cannot target this GPU (one logged line)."""
    from deploykit.kernels import cpu_backend, nvrtc

    status = nvrtc.probe()
    reason = None if status.ok else status.reason
    if reason is None:
        api = cuda_api()
        major, minor = api.compute_capability(0)
        try:
            nvrtc.check_arch(major * 10 + minor)
        except DeployKitError as e:
            reason = str(e)
    if reason is not None:
        log.warning("CUDA kernels unavailable, pre/post-processing runs on the CPU: %s", reason)
        return cpu_backend()
    return DeviceKernels()


def preprocess(images: np.ndarray, pre: Preprocess, out_dtype: str = "float32", color: str = "RGB",
               letterbox: bool = False, pad_value: float = 114.0) -> np.ndarray:
    """Module-level form, matching the host backend's signature."""
    return kernels().preprocess(images, pre, out_dtype, color, letterbox, pad_value)


def softmax_topk(logits: np.ndarray, k: int):
    """Module-level form, matching the host backend's signature."""
    return kernels().softmax_topk(logits, k)


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """Module-level form, matching the host backend's signature."""
    return kernels().argmax_channels(logits)


def detect(pred: np.ndarray, geometry: np.ndarray, settings: DetectSettings) -> list[DetectionArrays]:
    """Module-level form, matching the host backend's signature."""
    return kernels().detect(pred, geometry, settings)
