"""An artifact directory: plan.json + model.safetensors + report.json. Loading never unpickles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from deploykit.atomic import atomic_dir
from deploykit.errors import DeployKitError
from deploykit.graph.groups import ModelGraph
from deploykit.prune.plan import apply_plan, validate_plan
from deploykit.zoo.base import BuiltModel, Preprocess
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
    """Read and validate ``DIR/plan.json``."""
    p = Path(path) / PLAN
    if not p.is_file():
        raise DeployKitError(f"{path} is not a deploykit artifact: no {PLAN}")
    try:
        plan = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DeployKitError(f"{p} is not valid JSON: {e}") from None
    return validate_plan(plan, str(p))


def rebuild(plan: dict[str, Any]) -> tuple[BuiltModel, ModelGraph]:
    """The pruned architecture of ``plan`` with untrained weights, and its graph."""
    from deploykit.zoo import build_model

    shape = tuple(plan["input_shape"])
    base = build_model(plan["base_spec"], input_shape=shape, pretrained=False)
    graph = ModelGraph(base.traced, base.example_input(), ignore=plan.get("ignore", []))
    apply_plan(graph, plan)
    return base, graph


def load_artifact(path: str | Path) -> BuiltModel:
    """Rebuild a pruned model from ``DIR/plan.json`` and load ``DIR/model.safetensors``."""
    plan = read_plan(path)
    base, _ = rebuild(plan)
    weights = Path(path) / WEIGHTS
    load_into(base.model, read_state_dict(weights), str(weights))
    base.model.eval()
    return replace(
        base,
        spec=str(path),
        input_shape=tuple(plan["input_shape"]),
        preprocess=Preprocess.from_dict(plan["preprocess"]),
        labels=plan.get("labels"),
        base_spec=plan["base_spec"],
        plan=plan,
    )
