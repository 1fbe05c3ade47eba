"""A fake ``cuda.bindings`` (cuda-python: runtime, driver, nvrtc) over :mod:`fake_gpu`,
installed into ``sys.modules`` for one test, so deploykit's own ``CudaPython`` code runs.

What it mirrors, and from where (cuda-bindings 13.5 docstrings, installed with torch;
CUDA Runtime API reference):

* Every call returns a tuple whose first item is the error enum member, then the values
  (``cudaGetDeviceCount() -> (cudaError_t, int)``, ``cudaFree(ptr) -> (cudaError_t,)``).
* ``cudaGetDeviceCount`` "Returns: cudaSuccess, cudaErrorNoDevice, cudaErrorInsufficientDriver":
  a binding built for CUDA 13 on a CUDA 12 driver gets ``cudaErrorInsufficientDriver``
  (35) and no device count; ``cudaDriverGetVersion`` returns "the latest version of CUDA
  supported by the driver" (0 when no driver is installed), ``1000 * major + 10 * minor``.
  Minor-version compatibility: a driver runs any runtime of its own major version.
* NVRTC is a separate shared library: ``import cuda.bindings.nvrtc`` succeeds without it and
  the first call fails (cuda-bindings 13 raises ``DynamicLibNotFoundError``, a
  ``RuntimeError``, from ``cuda.pathfinder``; 12.x raises ``RuntimeError: Failed to dlopen``).
  ``nvrtcGetSupportedArchs`` lists what it can target; NVRTC 13.0 here lists
  ``[75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]`` (no sm_72: CUDA 13 dropped
  offline compilation for Volta and Xavier) and a compile for another arch fails with
  ``NVRTC_ERROR_INVALID_OPTION``.
* ``cudaStreamDestroy`` of a destroyed stream: ``cudaErrorInvalidResourceHandle``.
"""

from __future__ import annotations

import ctypes
import enum
import sys
import types
from dataclasses import dataclass, field

import fake_gpu

cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                           "cudaErrorInsufficientDriver": 35, "cudaErrorNoDevice": 100,
                                           "cudaErrorInvalidResourceHandle": 400})
nvrtcResult = enum.IntEnum("nvrtcResult", {"NVRTC_SUCCESS": 0, "NVRTC_ERROR_INVALID_OPTION": 5,
                                           "NVRTC_ERROR_COMPILATION": 6})
NVRTC13_ARCHS = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]
NVRTC12_ARCHS = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90]


@dataclass
class Setup:
    """What the fake machine has."""

    binding: str = "13.0.2"  # cuda-bindings version: its major is the CUDA it needs
    driver_cuda: int = 13000  # cudaDriverGetVersion; 0 = no driver
    devices: list[fake_gpu.Device] = field(default_factory=lambda: [fake_gpu.current()])
    nvrtc: bool = True  # libnvrtc present
    nvrtc_archs: list[int] | None = None  # default: by the binding's major
    calls: list[str] = field(default_factory=list)

    @property
    def runtime_cuda(self) -> int:
        return int(self.binding.split(".")[0]) * 1000

    @property
    def insufficient(self) -> bool:
        return self.driver_cuda <= 0 or self.driver_cuda // 1000 < self.runtime_cuda // 1000


def _runtime(setup: Setup) -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = cudaError_t
    ok = cudaError_t.cudaSuccess
    rt.cudaDeviceAttr = enum.IntEnum("cudaDeviceAttr", {"cudaDevAttrComputeCapabilityMajor": 75,
                                                        "cudaDevAttrComputeCapabilityMinor": 76})
    rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})

    def dev(i=0):
        return setup.devices[i]

    def guarded(fn):
        def call(*args):
            setup.calls.append(fn.__name__)
            if setup.insufficient:
                return (cudaError_t.cudaErrorInsufficientDriver, *([0] if fn.__name__ in WITH_VALUE else []))
            return fn(*args)
        call.__name__ = fn.__name__
        return call

    WITH_VALUE = {"cudaGetDeviceCount", "cudaMalloc", "cudaStreamCreate", "cudaDeviceGetAttribute",
                  "cudaGetDeviceProperties"}

    def cudaGetDeviceCount():
        return (ok, len(setup.devices)) if setup.devices else (cudaError_t.cudaErrorNoDevice, 0)

    def cudaDriverGetVersion():
        return ok, setup.driver_cuda

    def cudaRuntimeGetVersion():
        return ok, setup.runtime_cuda

    def cudaSetDevice(i):
        return (ok,)

    def cudaDeviceGetAttribute(attr, i):
        return ok, dev(i).cc[0 if attr == rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor else 1]

    def cudaGetDeviceProperties(i):
        return ok, types.SimpleNamespace(name=dev(i).name.encode() + b"\x00" * 8)

    def cudaMalloc(n):
        return ok, dev().malloc(n)

    def cudaFree(ptr):
        if ptr == 0:
            return (ok,)
        try:
            dev().free(ptr)
        except RuntimeError:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (ok,)

    def cudaStreamCreate():
        return ok, dev().create_stream()

    def cudaStreamDestroy(stream):
        try:
            dev().destroy_stream(int(stream))
        except RuntimeError:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (ok,)

    def cudaStreamSynchronize(stream):
        try:
            dev().check_stream(int(stream))
        except RuntimeError:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (ok,)

    def cudaStreamQuery(stream):
        try:
            dev().check_stream(int(stream))
        except RuntimeError:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (ok,)  # the fake's work is done when it is enqueued

    def cudaMemcpyAsync(dst, src, n, kind, stream):
        dev().check_stream(int(stream))
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            dev().buffer(dst, n)[:] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(dev().buffer(src, n)), n)
        return (ok,)

    for fn in (cudaGetDeviceCount, cudaSetDevice, cudaDeviceGetAttribute, cudaGetDeviceProperties, cudaMalloc,
               cudaFree, cudaStreamCreate, cudaStreamDestroy, cudaStreamSynchronize, cudaStreamQuery, cudaMemcpyAsync):
        setattr(rt, fn.__name__, guarded(fn))
    rt.cudaDriverGetVersion, rt.cudaRuntimeGetVersion = cudaDriverGetVersion, cudaRuntimeGetVersion
    return rt


def _nvrtc(setup: Setup) -> types.ModuleType:
    nv = types.ModuleType("cuda.bindings.nvrtc")
    nv.nvrtcResult = nvrtcResult
    ok = nvrtcResult.NVRTC_SUCCESS
    major = int(setup.binding.split(".")[0])
    archs = setup.nvrtc_archs or (NVRTC13_ARCHS if major >= 13 else NVRTC12_ARCHS)
    programs: dict[int, dict] = {}

    def lib(fn):
        def call(*args):
            setup.calls.append(fn.__name__)
            if not setup.nvrtc:
                raise RuntimeError(f'Failed to dlopen libnvrtc.so.{major} (the "cuda-nvrtc" library is not installed)')
            return fn(*args)
        call.__name__ = fn.__name__
        return call

    def nvrtcVersion():
        return ok, major, 0

    def nvrtcGetSupportedArchs():
        return ok, list(archs)

    def nvrtcCreateProgram(src, name, n, headers, names):
        handle = len(programs) + 1
        programs[handle] = {"src": src, "log": b"", "cubin": b""}
        return ok, handle

    def nvrtcCompileProgram(prog, n, opts):
        arch = next((int(o.split(b"sm_")[1]) for o in opts if o.startswith(b"--gpu-architecture=sm_")), None)
        if arch not in archs:
            programs[prog]["log"] = b"nvrtc: error: invalid value for --gpu-architecture (-arch)\n"
            return (nvrtcResult.NVRTC_ERROR_INVALID_OPTION,)
        programs[prog]["cubin"] = b"\x7fELF-fake-cubin-sm_%d" % arch
        return (ok,)

    def nvrtcGetProgramLogSize(prog):
        return ok, len(programs[prog]["log"]) + 1

    def nvrtcGetProgramLog(prog, buf):
        return (ok,)

    def nvrtcGetCUBINSize(prog):
        return ok, len(programs[prog]["cubin"])

    def nvrtcGetCUBIN(prog, buf):
        return (ok,)

    def nvrtcDestroyProgram(prog):
        programs.pop(prog, None)
        return (ok,)

    for fn in (nvrtcVersion, nvrtcGetSupportedArchs, nvrtcCreateProgram, nvrtcCompileProgram, nvrtcGetProgramLogSize,
               nvrtcGetProgramLog, nvrtcGetCUBINSize, nvrtcGetCUBIN, nvrtcDestroyProgram):
        setattr(nv, fn.__name__, lib(fn))
    return nv


def install(monkeypatch, setup: Setup | None = None, pycuda: bool = False) -> Setup:
    """Put the fake ``cuda.bindings`` into ``sys.modules`` (and hide pycuda unless asked)."""
    setup = setup or Setup()
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.__version__ = setup.binding
    bindings.runtime = _runtime(setup)
    bindings.driver = types.ModuleType("cuda.bindings.driver")
    bindings.nvrtc = _nvrtc(setup)
    cuda.bindings = bindings
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", bindings.runtime),
                      ("cuda.bindings.driver", bindings.driver), ("cuda.bindings.nvrtc", bindings.nvrtc)):
        monkeypatch.setitem(sys.modules, name, mod)
    if not pycuda:
        monkeypatch.setitem(sys.modules, "pycuda", None)  # `import pycuda` raises ImportError
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    return setup


def hide(monkeypatch) -> None:
    """No cuda-python at all."""
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.bindings.driver", "cuda.bindings.nvrtc",
                 "cuda.cudart", "cuda.cuda", "cuda.nvrtc"):
        monkeypatch.setitem(sys.modules, name, None)
