"""Where the CUDA C sources live and where their builds are cached.

The sources sit in the repository's top-level ``kernels/`` (``DEPLOYKIT_KERNELS_DIR``
overrides it, e.g. in a Jetson bundle that carries a copy). Builds go to a cache keyed
by a hash of every source byte and the build options, so an edited header is never
served a stale library: ``build/kernels/`` of the checkout (git-ignored), else
``$DEPLOYKIT_CACHE`` or ``~/.cache/deploykit/kernels``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from deploykit.errors import DeployKitError

HEADERS = ("common.h", "preprocess.h", "postprocess.h", "nms.h")
CUDA_SOURCES = ("preprocess.cu", "postprocess.cu", "nms.cu")
HOST_SOURCE = "host.cpp"

_REPO_ROOT = Path(__file__).resolve().parents[2]


def kernels_dir() -> Path:
    """The directory holding ``host.cpp``, the ``.cu`` files and ``include/deploykit/``."""
    env = os.environ.get("DEPLOYKIT_KERNELS_DIR")
    path = Path(env) if env else _REPO_ROOT / "kernels"
    if not (path / HOST_SOURCE).is_file():
        raise DeployKitError(
            f"kernel sources not found in {path}; set DEPLOYKIT_KERNELS_DIR to a copy of deploykit's kernels/ directory"
        )
    return path


def include_dir() -> Path:
    """The include root (``#include "deploykit/preprocess.h"`` resolves under it)."""
    return kernels_dir() / "include"


def source_files() -> list[Path]:
    """Every source a build depends on, in a fixed order."""
    root = kernels_dir()
    return [root / "include" / "deploykit" / h for h in HEADERS] + [root / s for s in (*CUDA_SOURCES, HOST_SOURCE)]


def source_hash(*extra: str) -> str:
    """A short hash of all sources plus ``extra`` strings (compiler, options, arch)."""
    h = hashlib.sha256()
    for f in source_files():
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """The directory build outputs are cached in (created on demand)."""
    env = os.environ.get("DEPLOYKIT_CACHE")
    if env:
        path = Path(env) / "kernels"
    elif (_REPO_ROOT / "kernels" / HOST_SOURCE).is_file() and os.access(_REPO_ROOT, os.W_OK):
        path = _REPO_ROOT / "build" / "kernels"
    else:
        path = Path.home() / ".cache" / "deploykit" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path
