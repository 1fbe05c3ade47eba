"""Resumable checkpoints: safetensors + JSON, written so that a kill at any instant leaves a usable one.

A checkpoint is a directory ``step-NNNNNNNN`` under ``DIR/checkpoints``:

| file | what |
| --- | --- |
| ``tensors.safetensors`` | every tensor: model weights, optimizer state, criterion accumulators, RNG states |
| ``meta.json`` | the iteration, the plan (kept channels), the schedule's state, the optimizer's non-tensor state, the run's config, the SHA-256 of the tensor file, and the SHA-256 of the metadata itself |

It is written into a hidden temporary directory, flushed to disk, and renamed into
place (an atomic step); only then are older checkpoints deleted. Loading takes the
newest checkpoint whose files are complete, match their recorded hashes and whose
metadata fits :class:`MetaDoc`, so a half-written, damaged or hand-edited directory is
skipped (and the reason recorded in :attr:`CheckpointDir.skipped`), never loaded.
Nothing is unpickled.
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
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from deploykit.atomic import publish_mode
from deploykit.config import MAX_ITEMS, StrictDocument, Text, read_json, validate_document
from deploykit.errors import DeployKitError

if TYPE_CHECKING:
    from deploykit.graph.groups import ModelGraph

FORMAT = "deploykit-checkpoint"
# 2: meta.json records its own hash (a hand-edited one is detected); version 1 did not.
VERSION = 2
TENSORS = "tensors.safetensors"
META = "meta.json"
PREFIX = "step-"
META_WHAT = f"deploykit checkpoint metadata ({FORMAT}/{VERSION})"
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class HashesDoc(StrictDocument):
    """SHA-256 of the tensor file and of the metadata (see :func:`_meta_digest`)."""

    tensors: Sha256 = Field(alias=TENSORS)
    meta: Sha256 = Field(alias=META)


class RemovedDoc(StrictDocument):
    """A group the checkpointed model had shrunk: its id and the original indices it kept."""

    id: Text = Field(min_length=1)
    kept: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _ascending(self) -> RemovedDoc:
        if any(b <= a for a, b in zip(self.kept, self.kept[1:])):
            raise ValueError("kept indices must be unique and ascending")
        return self


class StateDoc(StrictDocument):
    """A schedule's progress: the fields of :class:`deploykit.train.job.PruneState` (a test keeps them equal)."""

    iteration: int = Field(0, ge=0)
    pruned_at: int | None = Field(None, ge=0)
    removals: list[list[Any]] = Field(default_factory=list, max_length=MAX_ITEMS)
    stages: dict[Text, dict[Text, float | None]] = Field(default_factory=dict)
    latency_checks: list[dict[Text, Any]] = Field(default_factory=list, max_length=MAX_ITEMS)


class MetaDoc(StrictDocument):
    """The schema of a checkpoint's ``meta.json``: the header :meth:`CheckpointDir.save` writes,
    and the keys the compress pipeline's metadata holds."""

    format: Literal[FORMAT]  # type: ignore[valid-type]
    version: Literal[VERSION]  # type: ignore[valid-type]
    iteration: int = Field(ge=0)
    sha256: HashesDoc
    config: dict[Text, Any] = Field(default_factory=dict)
    state: StateDoc | None = None
    plan: list[RemovedDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    base_top1: dict[Text, float | None] = Field(default_factory=dict)
    world_size: int = Field(1, ge=1)
    optimizer: dict[Text, Any] | None = None


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


def _meta_digest(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the metadata without its own hash, in a canonical JSON form."""
    hashes = {k: v for k, v in doc.get("sha256", {}).items() if k != META}
    body = {**doc, "sha256": hashes}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
        # (directory, why) for every checkpoint the last latest() passed over.
        self.skipped: list[tuple[Path, str]] = []

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
            # Written as it will be read back (through JSON), so the digest covers what loading sees.
            doc = json.loads(json.dumps(doc))
            doc["sha256"][META] = _meta_digest(doc)
            (tmp / META).write_text(json.dumps(doc, indent=1) + "\n")
            _fsync(tmp / META)
            _fsync(tmp)
            publish_mode(tmp)  # mkdtemp's 0700: a checkpoint is read like the rest of the artifact
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
        """The newest complete, undamaged checkpoint, or None; the ones passed over are in :attr:`skipped`."""
        self.skipped = []
        for path in reversed(self._dirs()):
            try:
                return self._load(path)
            except DeployKitError as e:
                self.skipped.append((path, str(e)))
        return None

    def _load(self, path: Path) -> Checkpoint:
        """The checkpoint in ``path``.

        Raises:
            DeployKitError: one line saying why it cannot be used (missing, damaged, edited, another version).
        """
        from safetensors.torch import load_file

        doc = read_json(path / META, META_WHAT)
        meta = validate_document(doc, MetaDoc, str(path / META), META_WHAT)
        if _meta_digest(doc) != meta.sha256.meta:
            raise DeployKitError(f"{path / META} does not match its recorded hash: edited or damaged")
        try:
            if _sha256(path / TENSORS) != meta.sha256.tensors:
                raise DeployKitError(f"{path / TENSORS} does not match its recorded hash: damaged")
            flat = load_file(str(path / TENSORS))
        except DeployKitError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the reader raises, the file is unusable
            raise DeployKitError(f"{path / TENSORS} cannot be read: {type(e).__name__}") from None
        tensors: dict[str, dict[str, torch.Tensor]] = {}
        for key, v in flat.items():
            section, _, name = key.partition("/")
            tensors.setdefault(section, {})[name] = v
        return Checkpoint(path, meta.iteration, tensors, doc)

    def clear(self) -> None:
        """Delete every checkpoint (a fresh run in a reused directory)."""
        shutil.rmtree(self.root, ignore_errors=True)


def check_plan(graph: ModelGraph, ckpt: Checkpoint) -> None:
    """Check, without changing ``graph``, that the checkpoint's plan fits this model.

    Raises:
        DeployKitError: the checkpoint names a group the model does not have, or indices it cannot keep.
    """
    source = ckpt.path / META
    for entry in ckpt.meta.get("plan", []):
        gid, kept = entry["id"], set(entry["kept"])
        try:
            g = graph.get(gid)
        except KeyError:
            raise DeployKitError(f"{source} names group {gid!r}, which the model does not have; it belongs to another "
                                 "model: resume with the same MODEL, or start over without --resume") from None
        if not kept <= set(g.kept):
            raise DeployKitError(f"{source}: group {gid!r} keeps channels the model has already removed or never had "
                                 f"(it has {g.channels} channels)")


def restore_plan(graph: ModelGraph, ckpt: Checkpoint) -> None:
    """Shrink ``graph`` to the architecture the checkpoint was taken at.

    Raises:
        DeployKitError: as :func:`check_plan`.
    """
    check_plan(graph, ckpt)
    for entry in ckpt.meta.get("plan", []):
        g = graph.get(entry["id"])
        kept = set(entry["kept"])
        graph.remove(g.id, [k for k in g.kept if k not in kept])


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
