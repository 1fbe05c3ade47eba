"""GPU packages are never imported by importing deploykit or any of its modules.

``tensorrt`` and ``pycuda`` are blocked outright in the child process (an import
attempt fails the test). ``cuda`` (cuda-python) is imported by torch itself on some
builds, so for it the check is that no deploykit module imports anything of it beyond
what its third-party dependencies already did.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import deploykit

GPU_ROOTS = ("tensorrt", "pycuda", "cuda")

CHILD = r"""
import importlib, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorrt", "pycuda"):
            raise ImportError(f"blocked GPU import: {name}")
        return None

sys.meta_path.insert(0, Block())
def gpu():
    return {m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda", "cuda")}

import deploykit
assert not gpu(), f"import deploykit imported {sorted(gpu())}"
assert "torch" not in sys.modules, "import deploykit imported torch"
import torch, onnx, onnxruntime, numpy  # the dependencies' own imports are the baseline
baseline = gpu()
for name in sys.argv[1:]:
    importlib.import_module(name)
    new = gpu() - baseline
    assert not new, f"{name} imported {sorted(new)[:5]}"
print("ok", len(sys.argv) - 1)
"""


def all_modules() -> list[str]:
    names = ["deploykit"]
    for info in pkgutil.walk_packages(deploykit.__path__, "deploykit."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_no_module_imports_gpu_packages():
    mods = all_modules()
    assert "deploykit.runtime.trt" in mods and "deploykit.cuda" in mods
    proc = subprocess.run([sys.executable, "-c", CHILD, *mods], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"ok {len(mods)}"
