"""Resumable checkpoints: safetensors + JSON, written so that a kill at any instant leaves a usable one.

A checkpoint is a directory ``step-NNNNNNNN`` under ``DIR/checkpoints``:

| file | what |
| --- | --- |
| ``tensors.safetensors`` | every tensor: model weights, optimizer state, criterion accumulators, RNG states |
| ``meta.json`` | the iteration, the plan (kept channels), the schedule's state, the optimizer's non-tensor state, the run's config, and the SHA-256 of the tensor file |

It is written into a hidden temporary directory, flushed to disk, and renamed into
place (an atomic step); only then are older checkpoints deleted. Loading takes the
newest checkpoint whose files are complete and match their recorded hashes, so a
half-written or damaged directory is skipped, never loaded. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "deploykit-checkpoint"
VERSION = 1
TENSORS = "tensors.safetensors"
META = "meta.json"
PREFIX = "step-"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` by section (``model``, ``optimizer``, ...) and ``meta``."""

    path: Path
    iteration: int
    tensors: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointDir:
    """Checkpoints of one run under ``root``, keeping the newest ``keep``."""

    def __init__(self, root: str | os.PathLike, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def save(self, iteration: int, tensors: Mapping[str, Mapping[str, torch.Tensor]], meta: Mapping[str, Any]) -> Path:
        """Write a checkpoint for ``iteration`` atomically; returns its directory."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        flat = {f"{section}/{k}": v.detach().cpu().contiguous().clone() for section, d in tensors.items() for k, v in d.items()}
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            save_file(flat, str(tmp / TENSORS), metadata={"format": FORMAT})
            _fsync(tmp / TENSORS)
            doc = {"format": FORMAT, "version": VERSION, "iteration": iteration, "sha256": {TENSORS: _sha256(tmp / TENSORS)},
                   **meta}
            (tmp / META).write_text(json.dumps(doc, indent=1) + "\n")
            _fsync(tmp / META)
            _fsync(tmp)
            dest = self.root / f"{PREFIX}{iteration:08d}"
            if dest.exists():  # a re-run of the same iteration after a resume: replace it
                shutil.rmtree(dest)
            os.rename(tmp, dest)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self._dirs()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return dest

    def _dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))

    def latest(self) -> Checkpoint | None:
        """The newest complete, undamaged checkpoint, or None."""
        for path in reversed(self._dirs()):
            ckpt = self._load(path)
            if ckpt is not None:
                return ckpt
        return None

    def _load(self, path: Path) -> Checkpoint | None:
        from safetensors.torch import load_file

        try:
            meta = json.loads((path / META).read_text())
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                return None
            if _sha256(path / TENSORS) != meta["sha256"][TENSORS]:
                return None
            flat = load_file(str(path / TENSORS))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        tensors: dict[str, dict[str, torch.Tensor]] = {}
        for key, v in flat.items():
            section, _, name = key.partition("/")
            tensors.setdefault(section, {})[name] = v
        return Checkpoint(path, int(meta["iteration"]), tensors, meta)

    def clear(self) -> None:
        """Delete every checkpoint (a fresh run in a reused directory)."""
        shutil.rmtree(self.root, ignore_errors=True)


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON (no pickling needed to load it)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    for idx, st in doc.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": doc["param_groups"]}
