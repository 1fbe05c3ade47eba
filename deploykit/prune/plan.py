"""plan.json: what was removed, in a form that rebuilds the pruned architecture.

A plan names the base model spec, the library versions, the input shape, the
preprocessing, and for every group that shrank its root layer, original width
and the original indices of the channels kept. Rebuilding = build the base
model, trace its graph, remove the complement of ``kept`` from each group.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from deploykit.config import MAX_ITEMS, StrictDocument, Text, validate_document
from deploykit.errors import DeployKitError
from deploykit.graph.groups import ModelGraph
from deploykit.zoo.base import BuiltModel, Dim, PreprocessDoc, check_input_shape

PLAN_FORMAT = "deploykit-plan"
PLAN_VERSION = 1
PLAN_WHAT = f"a deploykit plan ({PLAN_FORMAT}/{PLAN_VERSION})"
MAX_CHANNELS = 1 << 20
Index = Annotated[int, Field(ge=0, lt=MAX_CHANNELS)]


class GroupDoc(StrictDocument):
    """One shrunk group: its id, its original width, and the original indices it keeps."""

    id: Text = Field(min_length=1)
    channels: int = Field(ge=1, le=MAX_CHANNELS)
    kept: list[Index] = Field(min_length=1, max_length=MAX_CHANNELS)

    @model_validator(mode="after")
    def _kept_in_range(self) -> GroupDoc:
        for i, (a, b) in enumerate(zip(self.kept, self.kept[1:]), start=1):
            if b <= a:
                raise ValueError(f"kept indices must be unique and ascending; kept[{i}] = {b} follows {a}")
        if self.kept[-1] >= self.channels:
            raise ValueError(f"kept index {self.kept[-1]} is out of range for {self.channels} channels "
                             f"(valid: 0..{self.channels - 1})")
        return self


class PlanDoc(StrictDocument):
    """The schema of plan.json (what :func:`make_plan` writes; its ``extra`` keys are listed here)."""

    format: Literal[PLAN_FORMAT]  # type: ignore[valid-type]
    version: Literal[PLAN_VERSION]  # type: ignore[valid-type]
    # A spec, never a path: a plan naming an artifact directory (itself, or one naming it back)
    # would recurse, and a path is not what the base model is.
    base_spec: Text
    input_shape: list[Dim] = Field(min_length=2, max_length=8)
    preprocess: PreprocessDoc
    labels: list[Text] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    versions: dict[Text, Text] = Field(default_factory=dict, max_length=100)
    groups: list[GroupDoc] = Field(max_length=MAX_ITEMS)
    criterion: Text | None = None
    ignore: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)

    @field_validator("base_spec")
    @classmethod
    def _spec(cls, v: str) -> str:
        from deploykit.zoo import check_spec

        return check_spec(v)

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        return check_input_shape(v)

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, v: list[GroupDoc]) -> list[GroupDoc]:
        seen: set[str] = set()
        for g in v:
            if g.id in seen:
                raise ValueError(f"group {g.id!r} appears twice")
            seen.add(g.id)
        return v


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the pruned model."""
    out = {}
    for pkg in ("deploykit", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def make_plan(base: BuiltModel, graph: ModelGraph, **extra: Any) -> dict[str, Any]:
    """The plan of ``graph``'s current state (groups that lost channels only).

    When ``base`` is itself a pruned artifact, indices are composed through its
    plan, so the new plan still rebuilds from the original base model.
    """
    earlier = {g["id"]: g for g in (base.plan or {}).get("groups", [])}
    groups = []
    for g, full in zip(graph.groups, graph.full_widths):
        prev = earlier.get(g.id)
        kept = [prev["kept"][i] for i in g.kept] if prev else list(g.kept)
        channels = prev["channels"] if prev else full
        if len(kept) < channels:
            groups.append({"id": g.id, "channels": channels, "kept": kept})
    # Keys in ``extra`` must be fields of PlanDoc: plans are read back through it.
    return {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "base_spec": base.base_spec or base.spec,
        "input_shape": list(base.input_shape),
        "preprocess": base.preprocess.to_dict(),
        "labels": base.labels,
        "versions": library_versions(),
        "groups": groups,
        **extra,
    }


def validate_plan(plan: Any, source: str) -> dict[str, Any]:
    """Check a parsed plan against :class:`PlanDoc`; the plan as a dict (keys it did not set left out).

    Raises:
        DeployKitError: one line: ``source``, the first violation's location and what is valid.
    """
    return validate_document(plan, PlanDoc, source, PLAN_WHAT).model_dump(exclude_unset=True)


def apply_plan(graph: ModelGraph, plan: dict[str, Any]) -> None:
    """Remove from ``graph``'s model every channel the (validated) plan does not keep."""
    for entry in plan["groups"]:
        gid = entry["id"]
        try:
            g = graph.get(gid)
        except KeyError:
            raise DeployKitError(f"plan group {gid!r} is not a channel group of {plan['base_spec']}") from None
        if g.channels != entry["channels"]:
            raise DeployKitError(f"plan group {gid!r} has {entry['channels']} channels, the model {g.channels}")
        kept = set(entry["kept"])
        if not kept or not kept <= set(range(g.channels)):
            raise DeployKitError(f"plan group {gid!r}: kept indices must be a non-empty subset of 0..{g.channels - 1}")
        graph.remove(gid, [i for i in range(g.channels) if i not in kept])
