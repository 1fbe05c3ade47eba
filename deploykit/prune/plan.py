"""plan.json: what was removed, in a form that rebuilds the pruned architecture.

A plan names the base model spec, the library versions, the input shape, the
preprocessing, and for every group that shrank its root layer, original width
and the original indices of the channels kept. Rebuilding = build the base
model, trace its graph, remove the complement of ``kept`` from each group.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from deploykit.errors import DeployKitError
from deploykit.graph.groups import ModelGraph
from deploykit.zoo.base import BuiltModel

PLAN_FORMAT = "deploykit-plan"
PLAN_VERSION = 1


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
    """Check a plan's shape; raise a DeployKitError naming what is wrong."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise DeployKitError(f"{source} is not a deploykit plan (missing format {PLAN_FORMAT!r})")
    if plan.get("version") != PLAN_VERSION:
        raise DeployKitError(f"{source}: plan version {plan.get('version')} is not supported (valid: {PLAN_VERSION})")
    for key in ("base_spec", "input_shape", "preprocess", "groups"):
        if key not in plan:
            raise DeployKitError(f"{source}: plan lacks {key!r}")
    for g in plan["groups"]:
        if not {"id", "channels", "kept"} <= set(g):
            raise DeployKitError(f"{source}: a group entry lacks id, channels or kept: {g}")
    return plan


def apply_plan(graph: ModelGraph, plan: dict[str, Any]) -> None:
    """Remove from ``graph``'s model every channel the plan does not keep."""
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
