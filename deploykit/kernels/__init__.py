"""Pre/post-processing kernels: CUDA C in ``kernels/``, run on the host or the GPU.

Backends, all with the same signatures (see :data:`BACKENDS`):

``host``       the C headers compiled with g++ and called through ctypes (CPU);
``reference``  NumPy formulations (the tests' reference; used when there is no compiler);
``cuda``       the ``.cu`` kernels compiled by NVRTC for the device's own architecture.

Nothing here imports CUDA until the ``cuda`` backend is asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from deploykit.registry import Registry

BACKENDS: Registry[str] = Registry("kernel backend")
BACKENDS.register("host", "deploykit.kernels.host")
BACKENDS.register("reference", "deploykit.kernels.reference")
BACKENDS.register("cuda", "deploykit.kernels.device")


def backend(name: str) -> ModuleType:
    """The module implementing ``preprocess``, ``softmax_topk`` and ``argmax_channels``."""
    return importlib.import_module(BACKENDS.get(name))


def cpu_backend() -> ModuleType:
    """The host library when it builds here, else the NumPy reference (same math)."""
    from deploykit.kernels import host

    return host if host.available() else backend("reference")
