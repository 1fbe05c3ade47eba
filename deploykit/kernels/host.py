"""The host build of the kernels: g++ → shared library, called through ctypes.

Built on first use into the kernel cache (see :mod:`.sources`), keyed by the sources'
hash and the compiler flags, written under a temporary name and renamed so that
concurrent processes never load a half-written library. A cached library that still
fails to load (truncated or damaged on disk, or built for another ABI) is rebuilt once;
if that fails too, one line is logged and :func:`available` says False, so callers use
the NumPy reference instead. ctypes releases the GIL for the duration of each call, so
several threads can preprocess at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.kernels import sources
from deploykit.kernels.detection import (DetectionArrays, DetectParams, DetectSettings, check_geometry,
                                                 check_head, make_detect_params, split_outputs)
from deploykit.kernels.params import PreprocessParams, check_images, make_params
from deploykit.zoo.base import Preprocess

# -ffp-contract=off: no fused multiply-add, matching nvcc/NVRTC --fmad=false, so host and
# device round identically. -fno-math-errno keeps expf free of errno traffic.
CXXFLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra")
ABI_VERSION = 2
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
# Why the library is unusable in this process (so the build is not retried, nor the line logged, per call).
_unusable: str | None = None
log = logging.getLogger(__name__)


def compiler() -> str | None:
    """The C++ compiler to use ($CXX, else g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def build(force: bool = False) -> Path:
    """Compile ``kernels/host.cpp`` (once per source hash) and return the library's path.

    Raises:
        DeployKitError: no compiler, or the compiler failed (its first error line is shown).
    """
    cxx = compiler()
    if cxx is None:
        raise DeployKitError("no C++ compiler (g++ or $CXX) to build the host kernel library")
    key = sources.source_hash(cxx, *CXXFLAGS)
    out = sources.cache_dir() / f"libdeploykit_kernels_host-{key}.so"
    if out.is_file() and not force:
        return out
    fd, tmp = tempfile.mkstemp(prefix=".host-", suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *CXXFLAGS, f"-I{sources.include_dir()}", str(sources.kernels_dir() / sources.HOST_SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise DeployKitError(f"building the host kernel library failed: {first}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _load(path: Path) -> ctypes.CDLL:
    """Load the library at ``path`` and declare its argument types.

    Raises:
        OSError: not a loadable shared object (truncated, damaged, wrong architecture).
        AttributeError: an entry point is missing.
        DeployKitError: it was built for another ABI or another params struct.
    """
    lib = ctypes.CDLL(str(path))
    if lib.dk_host_abi_version() != ABI_VERSION:
        raise DeployKitError(f"host kernel library ABI {lib.dk_host_abi_version()} != expected {ABI_VERSION}")
    if lib.dk_host_preprocess_params_size() != ctypes.sizeof(PreprocessParams):
        raise DeployKitError("host kernel library and deploykit disagree on DkPreprocessParams; rebuild it")
    if lib.dk_host_detect_params_size() != ctypes.sizeof(DetectParams):
        raise DeployKitError("host kernel library and deploykit disagree on DkDetectParams; rebuild it")
    vp, fp, ip = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
    lib.dk_host_preprocess.argtypes = [ctypes.POINTER(PreprocessParams), vp, vp, ctypes.c_int]
    lib.dk_host_softmax_topk.argtypes = [fp, ctypes.c_int, ctypes.c_int, ctypes.c_int, fp, ip, fp]
    lib.dk_host_argmax_channels.argtypes = [fp, ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ip]
    lib.dk_host_f32_to_f16.argtypes = [fp, ctypes.POINTER(ctypes.c_uint16), ctypes.c_longlong]
    lib.dk_host_f32_to_f16.restype = None
    lib.dk_host_detect.argtypes = [ctypes.POINTER(DetectParams), fp, ctypes.c_int, fp, fp, fp, ip, ip]
    return lib


def _first_line(e: BaseException) -> str:
    """The first line of an error's message (the exception's type when it has none), for one-line logs."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def library() -> ctypes.CDLL:
    """The loaded host library (built on first use), with argument types declared.

    A cached library that fails to load is rebuilt once; if the rebuilt one does not
    load either, that is logged once and final for this process.

    Raises:
        DeployKitError: no compiler, the build failed, or the rebuilt library does not load.
    """
    global _lib, _unusable
    with _lock:
        if _lib is not None:
            return _lib
        if _unusable is not None:
            raise DeployKitError(_unusable)
        path = build()  # no compiler or a failed compile: an expected setup, the caller falls back silently
        try:
            _lib = _load(path)
            return _lib
        except (OSError, AttributeError, DeployKitError) as e:
            first = _first_line(e)
        # The cache holds something that does not load (a disk error, a copy cut short, a build of
        # another deploykit version under the same key): build it afresh, once.
        try:
            _lib = _load(build(force=True))
        except (OSError, AttributeError, DeployKitError) as e:
            _unusable = (f"the host kernel library {path} does not load ({first}) and rebuilding it "
                         f"failed ({_first_line(e)})")
            log.warning("%s; using the NumPy reference kernels instead", _unusable)
            raise DeployKitError(_unusable) from None
        log.warning("the cached host kernel library %s did not load (%s); rebuilt it", path, first)
        return _lib


def available() -> bool:
    """Whether the host library is built or can be built here."""
    try:
        library()
    except DeployKitError:
        return False
    return True


def _fptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _iptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int))


def preprocess(
    images: np.ndarray,
    pre: Preprocess,
    out_dtype: str = "float32",
    color: str = "RGB",
    letterbox: bool = False,
    pad_value: float = 114.0,
) -> np.ndarray:
    """uint8 NHWC (any row stride) → normalized NCHW float32/float16 by the kernel math."""
    batch = check_images(images)
    params = make_params(batch, pre, out_dtype, color, letterbox, pad_value)
    out = np.empty((batch.shape[0], pre.channels, *pre.size), dtype=out_dtype)
    rc = library().dk_host_preprocess(ctypes.byref(params), batch.ctypes.data, out.ctypes.data, batch.shape[0])
    if rc != 0:
        raise DeployKitError(f"preprocessing kernel rejected its arguments (images {batch.shape}, size {pre.size})")
    return out


def softmax_topk(logits: np.ndarray, k: int, with_probs: bool = False):
    """Top-k softmax scores and indices per row of ``[rows, classes]`` logits.

    Returns:
        ``(scores float32 [rows, k], indices int32 [rows, k])``, plus the full softmax
        ``[rows, classes]`` when ``with_probs``.
    """
    x = np.ascontiguousarray(logits, dtype=np.float32)
    if x.ndim != 2 or not 1 <= k <= x.shape[1]:
        raise DeployKitError(f"softmax_topk needs [rows, classes] logits and 1 <= k <= classes, got {x.shape}, k={k}")
    rows, n = x.shape
    scores = np.empty((rows, k), np.float32)
    idx = np.empty((rows, k), np.int32)
    probs = np.empty((rows, n), np.float32) if with_probs else None
    library().dk_host_softmax_topk(_fptr(x), rows, n, k, _fptr(scores), _iptr(idx), _fptr(probs) if probs is not None else None)
    return (scores, idx, probs) if with_probs else (scores, idx)


def f32_to_f16_bits(values: np.ndarray) -> np.ndarray:
    """The kernels' float → half conversion (round to nearest even), as uint16 bit patterns."""
    x = np.ascontiguousarray(values, dtype=np.float32).ravel()
    out = np.empty(x.shape, np.uint16)
    library().dk_host_f32_to_f16(_fptr(x), out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)), x.size)
    return out.reshape(np.shape(values))


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """Per-pixel argmax over channels of ``[N, C, H, W]`` scores → int32 ``[N, H, W]``."""
    x = np.ascontiguousarray(logits, dtype=np.float32)
    if x.ndim != 4:
        raise DeployKitError(f"argmax_channels needs NCHW scores, got shape {x.shape}")
    n, c, h, w = x.shape
    labels = np.empty((n, h, w), np.int32)
    library().dk_host_argmax_channels(_fptr(x), n, c, h * w, _iptr(labels))
    return labels


def detect(pred: np.ndarray, geometry: np.ndarray, settings: DetectSettings) -> list[DetectionArrays]:
    """YOLO head decode + class-aware NMS by the kernel math (``kernels/include/deploykit/nms.h``).

    Args:
        pred: ``[N, 4 + nc, A]`` head output (cx, cy, w, h in model-input pixels, then class scores).
        geometry: ``[N, 6]`` letterbox geometry per image (:mod:`.detection`).
        settings: thresholds and limits.

    Returns:
        One :class:`~.detection.DetectionArrays` per image, best first, in original-image pixels.
    """
    x = check_head(pred)
    n = x.shape[0]
    geom = check_geometry(geometry, n)
    params = make_detect_params(x, settings)
    k = settings.max_det
    boxes, scores = np.empty((n, k, 4), np.float32), np.empty((n, k), np.float32)
    classes, counts = np.empty((n, k), np.int32), np.zeros(n, np.int32)
    rc = library().dk_host_detect(ctypes.byref(params), _fptr(x), n, _fptr(geom), _fptr(boxes), _fptr(scores),
                                  _iptr(classes), _iptr(counts))
    if rc != 0:
        raise DeployKitError(f"detection kernel rejected its arguments (head {x.shape}, {settings})")
    return split_outputs(boxes, scores, classes, counts)
