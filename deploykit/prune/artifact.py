"""An artifact directory: plan.json + model.safetensors + report.json. Loading never unpickles."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.atomic import atomic_dir
from deploykit.config import read_json
from deploykit.errors import DeployKitError
from deploykit.graph.groups import ModelGraph
from deploykit.prune.plan import PLAN_WHAT, apply_plan, validate_plan
from deploykit.zoo import check_input, model_from_spec, require_trust
from deploykit.zoo.base import BuiltModel, Preprocess, check_labels
from deploykit.zoo.weights import load_into, read_state_dict

PLAN = "plan.json"
WEIGHTS = "model.safetensors"
REPORT = "report.json"


def save_artifact(out: str | Path, model: nn.Module, plan: dict[str, Any], report: dict[str, Any], force: bool = False) -> Path:
    """Write the artifact to a temporary directory and move it to ``out`` when complete."""
    from safetensors.torch import save_file

    with atomic_dir(out, force=force) as tmp:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "deploykit"})
        (tmp / PLAN).write_text(json.dumps(plan, indent=2) + "\n")
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return Path(out)


def read_plan(path: str | Path) -> dict[str, Any]:
    """Read ``DIR/plan.json`` and validate it against the plan schema.

    Raises:
        DeployKitError: one line: no plan, unreadable or invalid JSON, or the first schema violation.
    """
    p = Path(path) / PLAN
    if not p.is_file():
        raise DeployKitError(f"{path} is not a deploykit artifact: no {PLAN}")
    return validate_plan(read_json(p, PLAN_WHAT), str(p))


def rebuild(
    plan: dict[str, Any], source: str = PLAN, trust_factory: bool | None = None
) -> tuple[BuiltModel, ModelGraph]:
    """The pruned architecture of a validated ``plan`` with untrained weights, and its graph.

    Args:
        source: where the plan came from (``DIR/plan.json``), for messages.
        trust_factory: let the plan's ``base_spec`` be a ``module:function`` factory (it runs code).

    Raises:
        DeployKitError: an untrusted factory, a base model that rejects the plan's input shape,
            or groups that do not fit it.
    """
    require_trust(plan["base_spec"], source, trust_factory)
    shape = tuple(plan["input_shape"])
    # The spec goes straight to the zoo, never through build_model: read as a path, a spec
    # naming an artifact directory would load that artifact (or this one, forever).
    base = model_from_spec(plan["base_spec"], input_shape=shape, pretrained=False)
    check_input(base)
    modules = {name for name, _ in base.traced.named_modules()}
    for name in plan.get("ignore", []):  # said here, not as the --ignore flag the graph would name
        if name not in modules:
            raise DeployKitError(f"{source}: ignore {name!r} names no module of {plan['base_spec']}")
    graph = ModelGraph(base.traced, base.example_input(), ignore=plan.get("ignore", []))
    apply_plan(graph, plan)
    return base, graph


def load_artifact(path: str | Path, trust_factory: bool | None = None) -> BuiltModel:
    """Rebuild a pruned model from ``DIR/plan.json`` and load ``DIR/model.safetensors``.

    Args:
        path: the artifact directory.
        trust_factory: let plan.json name a ``module:function`` factory (None: as an enclosing
            :func:`deploykit.zoo.trusting_factories` says, else refused). Registered families
            (``cifar:``, ``torchvision:``, ...) load without it.

    Raises:
        DeployKitError: one line for anything wrong with the directory or its files.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DeployKitError(f"an artifact is a directory path (str or Path), not {type(path).__name__}")
    plan = read_plan(path)
    source = str(Path(path) / PLAN)
    base, _ = rebuild(plan, source, trust_factory)
    weights = Path(path) / WEIGHTS
    load_into(base.model, read_state_dict(weights), str(weights))
    base.model.eval()
    labels = plan.get("labels")
    if labels is not None and base.task == "classification":
        check_labels(labels, _output_width(base), source)
    return replace(
        base,
        spec=str(path),
        input_shape=tuple(plan["input_shape"]),
        preprocess=Preprocess.from_dict(plan["preprocess"], source),
        labels=labels,
        base_spec=plan["base_spec"],
        plan=plan,
    )


def _output_width(built: BuiltModel) -> int | None:
    """A classifier's number of outputs (None when its output is not one ``[batch, classes]`` tensor)."""
    with torch.no_grad():
        out = built.model(built.example_input())
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None
