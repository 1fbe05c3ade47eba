"""Run-time compilation of the ``.cu`` kernels with NVRTC, for one GPU architecture.

One package serves every GPU: on the device, the kernels compile for that device's own
SM (``sm_72`` on Xavier, ``sm_87`` on Orin, ``sm_86`` on a desktop RTX 30xx, ...) with the
device's own NVRTC, and the cubin is cached by source hash, architecture and NVRTC
version. NVRTC needs no GPU, so the compile itself is tested on machines without one.

NVRTC is its own shared library: cuda-python installs it only with ``[all]`` (the
``gpu-cu12`` / ``gpu-cu13`` extras ask for that) or ``nvidia-cuda-nvrtc``, and
``import cuda.bindings.nvrtc`` succeeds without it, failing only at the first call. So
:func:`probe` makes that first call, and callers fall back to the host kernels when it
fails. Each NVRTC targets a fixed list of architectures (``nvrtcGetSupportedArchs``):
NVRTC 13 has no sm_72 (Xavier), which then needs JetPack 5's own CUDA 11.4 (the bundle's
``run.sh`` compiles the kernels with the device's nvcc).
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from deploykit.errors import DeployKitError
from deploykit.lazy import lazy_import
from deploykit.kernels import sources

OPTIONS = ("--fmad=false", "--std=c++17")  # --fmad=false: round like the host build


# cuda-python's NVRTC bindings: cuda.bindings.nvrtc, or cuda.nvrtc before 12.6.
NVRTC = lazy_import("cuda.bindings.nvrtc", "cuda.nvrtc", what="NVRTC", install="pip install cuda-python (deploykit[gpu])")


def nvrtc_module() -> ModuleType:
    """cuda-python's NVRTC bindings.

    Raises:
        MissingModuleError: cuda-python is not installed (a DeployKitError).
    """
    return NVRTC.module()


def _check(nvrtc: ModuleType, result: tuple, what: str, prog=None) -> tuple:
    err, *rest = result
    if int(err) != 0:
        log = _log(nvrtc, prog) if prog is not None else ""
        raise DeployKitError(f"NVRTC {what} failed ({err}): {log.strip().splitlines()[0] if log.strip() else ''}")
    return tuple(rest)


def _log(nvrtc: ModuleType, prog) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.decode(errors="replace").rstrip("\x00")


def version() -> tuple[int, int]:
    """NVRTC's (major, minor)."""
    nvrtc = nvrtc_module()
    major, minor = _check(nvrtc, nvrtc.nvrtcVersion(), "version")
    return int(major), int(minor)


@dataclass(frozen=True)
class NvrtcStatus:
    """Whether NVRTC loads, which version it is and which architectures it targets."""

    ok: bool
    reason: str
    version: tuple[int, int] = (0, 0)
    archs: tuple[int, ...] = ()


@functools.lru_cache(maxsize=None)
def probe() -> NvrtcStatus:
    """Load NVRTC by calling it (the import alone proves nothing)."""
    try:
        nvrtc = nvrtc_module()
        major, minor = _check(nvrtc, nvrtc.nvrtcVersion(), "version")
        archs = tuple(int(a) for a in _check(nvrtc, nvrtc.nvrtcGetSupportedArchs(), "supported archs")[0])
    except DeployKitError as e:
        return NvrtcStatus(False, str(e))
    except Exception as e:  # noqa: BLE001 - a missing libnvrtc surfaces as RuntimeError/OSError/..., lazily
        first = str(e).splitlines()[0][:160] if str(e) else ""
        return NvrtcStatus(False, f"NVRTC cannot be loaded ({type(e).__name__}: {first}); "
                                  "pip install 'deploykit[gpu-cu12]' or '[gpu-cu13]' (cuda-python[all])")
    return NvrtcStatus(True, f"NVRTC {major}.{minor}", (int(major), int(minor)), archs)


def check_arch(arch: int) -> None:
    """Refuse, in one line, an architecture this NVRTC cannot target (sm_72 on NVRTC 13)."""
    status = probe()
    if not status.ok:
        raise DeployKitError(status.reason)
    if status.archs and arch not in status.archs:
        raise DeployKitError(
            f"NVRTC {status.version[0]}.{status.version[1]} cannot target sm_{arch} (it targets sm_"
            f"{', sm_'.join(map(str, status.archs))}); on a Jetson Xavier (sm_72, JetPack 5) use JetPack's own "
            "CUDA 11.4: the bundle's run.sh compiles the kernels there with the device's nvcc")


def compile_cubin(source: str, arch: int, cache: bool = True) -> tuple[bytes, bool]:
    """Compile ``kernels/SOURCE`` to a cubin for ``sm_ARCH``.

    Returns:
        ``(cubin bytes, came_from_cache)``.
    """
    if source not in sources.CUDA_SOURCES:
        raise DeployKitError(f"unknown kernel source {source!r}; valid: {', '.join(sources.CUDA_SOURCES)}")
    check_arch(arch)
    nvrtc = nvrtc_module()
    ver = "%d.%d" % version()
    opts = (*OPTIONS, f"--gpu-architecture=sm_{arch}", f"--include-path={sources.include_dir()}")
    key = sources.source_hash(source, ver, *OPTIONS, str(arch))
    path = sources.cache_dir() / "nvrtc" / f"{Path(source).stem}-sm{arch}-{key}.cubin"
    if cache and path.is_file():
        return path.read_bytes(), True
    text = (sources.kernels_dir() / source).read_bytes()
    (prog,) = _check(nvrtc, nvrtc.nvrtcCreateProgram(text, source.encode(), 0, [], []), "create")
    try:
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        _check(nvrtc, result, f"compile of {source} for sm_{arch}", prog)
        (size,) = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "cubin size")
        buf = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, buf), "get cubin")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cubin-")
        with os.fdopen(fd, "wb") as f:
            f.write(buf)
        os.replace(tmp, path)
    return bytes(buf), False
