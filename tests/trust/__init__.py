"""Trust and safety: factories named by files, schemas of the files deploykit reads.

Helpers shared by the modules: a small real artifact (CIFAR ResNet-20 with random
weights, pruned l1 to 0.7 of its MACs; no training, a few seconds), tiny CIFAR-shaped
data shards, and a snapshot of a directory tree to show that nothing was written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

_SHARED: dict[str, Path] = {}


def shared_artifact(tmp_path_factory) -> Path:
    """One artifact for the whole session (built on first use): tests copy it, never change it."""
    if "artifact" not in _SHARED:
        _SHARED["artifact"] = make_artifact(tmp_path_factory.mktemp("trust-artifact") / "r20")
    return _SHARED["artifact"]


def shared_onnx(tmp_path_factory) -> Path:
    """The shared artifact exported to ONNX with its sidecar (once per session)."""
    if "onnx" not in _SHARED:
        import deploykit

        path = tmp_path_factory.mktemp("trust-onnx") / "r20.onnx"
        deploykit.export_onnx(deploykit.load(str(shared_artifact(tmp_path_factory))), str(path))
        _SHARED["onnx"] = path
    return _SHARED["onnx"]


def make_artifact(out: Path) -> Path:
    """Compress ``cifar:resnet20`` (random weights) to 0.7 of its MACs into ``out``."""
    import deploykit

    deploykit.compress(model="cifar:resnet20", out=str(out), target_macs=0.7, criterion="l1", evaluate_base=False)
    return out


def copy_artifact(src: Path, dst: Path, **plan_changes: Any) -> Path:
    """A copy of the artifact ``src`` at ``dst`` with top-level plan.json keys replaced."""
    shutil.copytree(src, dst)
    if plan_changes:
        edit_json(dst / "plan.json", lambda plan: plan.update(plan_changes))
    return dst


def edit_json(path: Path, change) -> None:
    """Apply ``change`` (a function mutating the parsed document in place) to a JSON file."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def cifar_shards(root: Path, n: int = 16, seed: int = 0) -> Path:
    """``cifar10_{train,test}_lossless_0.npz`` with ``n`` random 32×32 RGB images each."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        np.savez(root / f"cifar10_{split}_lossless_0.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n))
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root``: relative path → (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
