"""GPU memory, streams and modules through cuda-python, or pycuda where that is what the
device has (older JetPack images ship pycuda, TensorRT's samples moved to cuda-python).

Everything is imported inside functions: importing this module needs no GPU package.
:func:`gpu_available` is the one guard to call before touching TensorRT or CUDA, since a
TensorRT runtime created without a device logs an error and the next call segfaults.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.registry import Registry


class CudaApi(Protocol):
    """What the TensorRT runner and the device kernels need from a CUDA binding."""

    name: str

    def device_count(self) -> int: ...
    def compute_capability(self, device: int = 0) -> tuple[int, int]: ...
    def device_name(self, device: int = 0) -> str: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def synchronize(self, stream: Any) -> None: ...
    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None: ...
    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None: ...
    def load_module(self, cubin: bytes) -> Any: ...
    def function(self, module: Any, name: str) -> Any: ...
    def launch(self, fn: Any, grid: tuple[int, int, int], block: tuple[int, int, int], args: list[Any], stream: Any) -> None: ...


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error code."""
    if isinstance(result, tuple):
        err, *rest = result
    else:
        err, rest = result, []
    if int(err) != 0:
        raise DeployKitError(f"CUDA {what} failed: {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


class CudaPython:
    """cuda-python (``cuda.bindings``; ``cuda.cudart``/``cuda.cuda`` before 12.6)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import driver, runtime
        except ImportError:
            from cuda import cuda as driver  # type: ignore[no-redef]
            from cuda import cudart as runtime  # type: ignore[no-redef]
        self.rt, self.drv = runtime, driver

    def device_count(self) -> int:
        err, n = self.rt.cudaGetDeviceCount()
        return int(n) if int(err) == 0 else 0

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        a = self.rt.cudaDeviceAttr
        major = _check(self.rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMajor, device), "attribute")
        minor = _check(self.rt.cudaDeviceGetAttribute(a.cudaDevAttrComputeCapabilityMinor, device), "attribute")
        return int(major), int(minor)

    def device_name(self, device: int = 0) -> str:
        props = _check(self.rt.cudaGetDeviceProperties(device), "device properties")
        return props.name.decode(errors="replace").rstrip("\x00")

    def malloc(self, nbytes: int) -> int:
        return int(_check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        _check(self.rt.cudaFree(ptr), "cudaFree")

    def stream(self) -> Any:
        return _check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        _check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync H2D")

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync D2H")

    def load_module(self, cubin: bytes) -> Any:
        _check(self.rt.cudaFree(0), "context init")  # makes the primary context current
        return _check(self.drv.cuModuleLoadData(cubin), "cuModuleLoadData")

    def function(self, module: Any, name: str) -> Any:
        return _check(self.drv.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")

    def launch(self, fn: Any, grid: tuple[int, int, int], block: tuple[int, int, int], args: list[Any], stream: Any) -> None:
        # kernelParams is a void** : an array of pointers to each argument's bytes.
        holders = [a if isinstance(a, ctypes._SimpleCData | ctypes.Structure) else ctypes.c_uint64(int(a)) for a in args]
        params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        _check(self.drv.cuLaunchKernel(fn, *grid, *block, 0, int(stream), ctypes.addressof(params), 0), "cuLaunchKernel")


class PyCuda:
    """pycuda, with the device's primary context made current."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.ctx = drv.Device(0).retain_primary_context()
        self.ctx.push()

    def device_count(self) -> int:
        return int(self.drv.Device.count())

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        return tuple(self.drv.Device(device).compute_capability())  # type: ignore[return-value]

    def device_name(self, device: int = 0) -> str:
        return str(self.drv.Device(device).name())

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(nbytes, 1))
        self._keep = getattr(self, "_keep", {})
        self._keep[int(alloc)] = alloc  # pycuda frees on garbage collection: hold it
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = getattr(self, "_keep", {}).pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def stream(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def load_module(self, cubin: bytes) -> Any:
        return self.drv.module_from_buffer(cubin)

    def function(self, module: Any, name: str) -> Any:
        return module.get_function(name)

    def launch(self, fn: Any, grid: tuple[int, int, int], block: tuple[int, int, int], args: list[Any], stream: Any) -> None:
        # pycuda packs numpy scalars by value; a struct goes as an np.void of its bytes.
        packed = [
            np.frombuffer(bytes(a), dtype=np.dtype((np.void, ctypes.sizeof(a))))[0] if isinstance(a, ctypes.Structure)
            else np.asarray(a.value, dtype=np.dtype(type(a)._type_)) if isinstance(a, ctypes._SimpleCData)
            else np.uint64(int(a))
            for a in args
        ]
        fn(*packed, block=block, grid=grid, stream=stream)


BINDINGS: Registry[type] = Registry("CUDA binding")
BINDINGS.register("cuda-python", CudaPython)
BINDINGS.register("pycuda", PyCuda)
_PROBE_MODULES = {"cuda-python": ("cuda.bindings.runtime", "cuda.cudart"), "pycuda": ("pycuda.driver",)}


def _importable(name: str) -> bool:
    for mod in _PROBE_MODULES[name]:
        try:
            importlib.import_module(mod)
            return True
        except ImportError:
            continue
    return False


@functools.lru_cache(maxsize=None)
def cuda_api(prefer: str | None = None) -> CudaApi:
    """The first CUDA binding that imports (cuda-python, then pycuda), or ``prefer``.

    Raises:
        DeployKitError: none is installed.
    """
    order = [prefer] if prefer else BINDINGS.names()
    for name in order:
        if name in BINDINGS and _importable(name):
            return BINDINGS.get(name)()
    raise DeployKitError("no CUDA Python binding: pip install cuda-python (deploykit[gpu]) or pycuda")


@dataclass(frozen=True)
class GpuStatus:
    """Whether a GPU can be used, and why not when it cannot."""

    ok: bool
    reason: str
    binding: str | None = None


@functools.lru_cache(maxsize=None)
def gpu_status() -> GpuStatus:
    """Probe for a CUDA device without creating anything that could crash without one."""
    for name in BINDINGS.names():
        if not _importable(name):
            continue
        try:
            n = BINDINGS.get(name)().device_count()
        except Exception as e:  # noqa: BLE001 - a missing driver surfaces as many error types
            return GpuStatus(False, f"no usable CUDA driver ({type(e).__name__}: {str(e).splitlines()[0][:120]})", name)
        if n > 0:
            return GpuStatus(True, f"{n} CUDA device(s) via {name}", name)
        return GpuStatus(False, "no CUDA device found (no driver, or no GPU)", name)
    return GpuStatus(False, "no CUDA Python binding installed (pip install cuda-python)", None)


def gpu_available() -> bool:
    """True when a CUDA device is present and a binding can reach it."""
    return gpu_status().ok
