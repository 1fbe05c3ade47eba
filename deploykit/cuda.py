"""GPU memory, streams and modules through cuda-python, or pycuda where that is what the
device has (older JetPack images ship pycuda, TensorRT's samples moved to cuda-python).

The bindings are lazy modules (:mod:`deploykit.lazy`): importing this module needs no GPU package.
:func:`gpu_status` is the one guard to call before touching TensorRT or CUDA, since a
TensorRT runtime created without a device logs an error and the next call segfaults.

Which binding: cuda-python's ``cuda.bindings`` is built for one CUDA major version and
needs a driver of at least that version (cuda-bindings 13 needs a CUDA 13 driver, r580+;
JetPack 6 and older desktop drivers are CUDA 12). So the probe asks each installed binding
in turn (cuda-python, then pycuda) and uses the first that reaches a device; when none
does, the reason given is the most telling one: a driver too old for the binding is said
as such, with the extra to install (``deploykit[gpu-cu12]``), not as "no device".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.lazy import LazyModule, lazy_import
from deploykit.registry import Registry

_GPU_EXTRA = "pip install 'deploykit[gpu]'"
# cuda-python's modules moved under cuda.bindings in 12.6; the older names come second.
CUDA_RUNTIME = lazy_import("cuda.bindings.runtime", "cuda.cudart", what="cuda-python", install=_GPU_EXTRA)
CUDA_DRIVER = lazy_import("cuda.bindings.driver", "cuda.cuda", what="cuda-python", install=_GPU_EXTRA)
PYCUDA_DRIVER = lazy_import("pycuda.driver", what="pycuda", install="pip install pycuda")

# cudaError_t values (CUDA Runtime API docs: cudaGetDeviceCount "Returns: cudaSuccess,
# cudaErrorNoDevice, cudaErrorInsufficientDriver").
CUDA_SUCCESS, CUDA_ERROR_INSUFFICIENT_DRIVER, CUDA_ERROR_NO_DEVICE = 0, 35, 100


class CudaApi(Protocol):
    """What the TensorRT runner and the device kernels need from a CUDA binding."""

    name: str

    def device_count(self) -> int: ...
    def compute_capability(self, device: int = 0) -> tuple[int, int]: ...
    def device_name(self, device: int = 0) -> str: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def stream(self) -> Any: ...
    def destroy_stream(self, stream: Any) -> None: ...
    def stream_handle(self, stream: Any) -> int: ...
    def scope(self) -> contextlib.AbstractContextManager[None]: ...
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


def cuda_version_text(code: int) -> str:
    """``12020`` (CUDA's 1000 * major + 10 * minor) → ``"12.2"``."""
    return f"{code // 1000}.{(code % 1000) // 10}"


@dataclass(frozen=True)
class Probe:
    """What one binding found: devices, or why none can be used."""

    devices: int
    reason: str
    insufficient_driver: bool = False


class CudaPython:
    """cuda-python (``cuda.bindings``; ``cuda.cudart``/``cuda.cuda`` before 12.6)."""

    name = "cuda-python"
    module: LazyModule = CUDA_RUNTIME

    def __init__(self) -> None:
        runtime, driver = CUDA_RUNTIME.module(), CUDA_DRIVER.module()
        package = sys.modules.get("cuda.bindings") if runtime.__name__.startswith("cuda.bindings") else None
        self.version = str(getattr(package, "__version__", "?")) if package is not None else "<12.6"
        self.rt, self.drv = runtime, driver
        self._local = threading.local()

    def probe(self) -> Probe:
        """Count devices; a driver older than this binding's CUDA is named as such."""
        err, n = self.rt.cudaGetDeviceCount()
        code = int(err)
        if code == CUDA_SUCCESS:
            return Probe(int(n), f"{int(n)} CUDA device(s) via cuda-python {self.version}" if n else
                         "no CUDA device found (the driver reports none)")
        if code == CUDA_ERROR_NO_DEVICE:
            return Probe(0, "no CUDA device found (the driver reports none)")
        if code == CUDA_ERROR_INSUFFICIENT_DRIVER:
            driver = self._version(self.rt.cudaDriverGetVersion)  # 0: no driver at all
            runtime = self._version(self.rt.cudaRuntimeGetVersion)
            if driver <= 0:
                return Probe(0, "no NVIDIA driver found (cudaErrorInsufficientDriver with no driver version)")
            need = f"CUDA {cuda_version_text(runtime)}" if runtime > 0 else "a newer CUDA"
            return Probe(0, f"the NVIDIA driver supports CUDA {cuda_version_text(driver)} but cuda-python "
                            f"{self.version} needs {need}: install the binding for this driver "
                            f"(pip install 'deploykit[gpu-cu{driver // 1000}]') or pycuda, or update the driver",
                         insufficient_driver=True)
        return Probe(0, f"cudaGetDeviceCount failed: {err}")

    @staticmethod
    def _version(fn: Any) -> int:
        try:
            err, value = fn()
        except Exception:  # noqa: BLE001 - an old binding may lack the call; 0 means unknown
            return 0
        return int(value) if int(err) == CUDA_SUCCESS else 0

    def device_count(self) -> int:
        return self.probe().devices

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The runtime API makes the primary context current per thread; make sure it has, once."""
        if not getattr(self._local, "ready", False):
            _check(self.rt.cudaSetDevice(0), "cudaSetDevice")
            self._local.ready = True
        yield

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

    def destroy_stream(self, stream: Any) -> None:
        _check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

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
    """pycuda, with the device's primary context pushed around each use, in the calling thread.

    pycuda keeps one context stack per thread and aborts the process when a stack is not
    empty at cleanup ("The context stack was not empty upon module cleanup"), so nothing
    stays pushed: :meth:`scope` pushes the primary context and pops it when the outermost
    use in that thread ends. That also makes any thread able to use the binding.
    """

    name = "pycuda"
    module: LazyModule = PYCUDA_DRIVER

    def __init__(self) -> None:
        drv = PYCUDA_DRIVER.module()
        drv.init()
        self.drv = drv
        self._ctx: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._keep: dict[int, Any] = {}  # pycuda frees an allocation when its object dies: hold it

    def probe(self) -> Probe:
        n = int(self.drv.Device.count())
        return Probe(n, f"{n} CUDA device(s) via pycuda" if n else "no CUDA device found (pycuda sees none)")

    def _primary(self) -> Any:
        with self._lock:
            if self._ctx is None:
                self._ctx = self.drv.Device(0).retain_primary_context()
            return self._ctx

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The primary context is current in this thread inside the block (re-entrant)."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._primary().push()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                self.drv.Context.pop()

    def device_count(self) -> int:
        return self.probe().devices

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        return tuple(self.drv.Device(device).compute_capability())  # type: ignore[return-value]

    def device_name(self, device: int = 0) -> str:
        return str(self.drv.Device(device).name())

    def malloc(self, nbytes: int) -> int:
        with self.scope():
            alloc = self.drv.mem_alloc(max(nbytes, 1))
        self._keep[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._keep.pop(ptr, None)
        if alloc is not None:
            with self.scope():
                alloc.free()

    def stream(self) -> Any:
        with self.scope():
            return self.drv.Stream()

    def destroy_stream(self, stream: Any) -> None:
        # pycuda destroys a stream when its object dies (activating its context itself);
        # synchronizing first means nothing is still queued on it then.
        with self.scope():
            stream.synchronize()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        with self.scope():
            stream.synchronize()

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        with self.scope():
            self.drv.memcpy_htod_async(dst, src, stream)

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        with self.scope():
            self.drv.memcpy_dtoh_async(dst, src, stream)

    def load_module(self, cubin: bytes) -> Any:
        with self.scope():
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
        with self.scope():
            fn(*packed, block=block, grid=grid, stream=stream)


BINDINGS: Registry[type] = Registry("CUDA binding")
BINDINGS.register("cuda-python", CudaPython)
BINDINGS.register("pycuda", PyCuda)


def _importable(name: str) -> bool:
    return BINDINGS.get(name).module.available()


@functools.lru_cache(maxsize=None)
def _binding(name: str) -> CudaApi:
    """One instance per binding for the process (pycuda's primary context is retained once)."""
    return BINDINGS.get(name)()


@dataclass(frozen=True)
class GpuStatus:
    """Whether a GPU can be used, and why not when it cannot."""

    ok: bool
    reason: str
    binding: str | None = None


@functools.lru_cache(maxsize=None)
def gpu_status() -> GpuStatus:
    """Probe every installed binding for a CUDA device, without creating anything that could crash without one."""
    failures: list[tuple[Probe, str]] = []
    for name in BINDINGS.names():
        if not _importable(name):
            continue
        try:
            probe = _binding(name).probe()  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - a missing driver surfaces as many error types
            probe = Probe(0, f"no usable CUDA driver via {name} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        if probe.devices > 0:
            return GpuStatus(True, probe.reason, name)
        failures.append((probe, name))
    if not failures:
        return GpuStatus(False, "no CUDA Python binding installed (pip install 'deploykit[gpu]')", None)
    # The most telling reason first: a driver too old for the binding is fixable by a reinstall.
    probe, name = sorted(failures, key=lambda f: not f[0].insufficient_driver)[0]
    others = "; ".join(f"{n}: {p.reason}" for p, n in failures if n != name)
    return GpuStatus(False, probe.reason + (f" ({others})" if others else ""), name)


@functools.lru_cache(maxsize=None)
def cuda_api(prefer: str | None = None) -> CudaApi:
    """The binding that reaches the GPU (see :func:`gpu_status`), or ``prefer``.

    Raises:
        DeployKitError: no binding reaches a device; the reason says why.
    """
    if prefer:
        return _binding(prefer)  # an unknown name is a DeployKitError listing the valid ones
    status = gpu_status()
    if not status.ok or status.binding is None:
        raise DeployKitError(f"no usable CUDA device: {status.reason}")
    return _binding(status.binding)


def gpu_available() -> bool:
    """True when a CUDA device is present and a binding can reach it."""
    return gpu_status().ok


def reset() -> None:
    """Forget every probe and binding instance (tests that swap the GPU packages)."""
    for cached in (gpu_status, cuda_api, _binding):
        cached.cache_clear()
