"""``report.json`` of a compress run: costs before and after, top-1 by stage, the removals, rounding
and the verification of the plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from deploykit.compression import CompressConfig
from deploykit.graph import verify
from deploykit.graph.costs import Costs
from deploykit.graph.groups import ModelGraph
from deploykit.train.job import Job


def rounding(unrounded: dict[str, str], graph: ModelGraph, round_to: int | str) -> dict[str, Any]:
    """The report's ``rounding``: groups (and their layers) that could not keep a multiple of ``--round-to``, and why."""
    detail = {gid: {"reason": why, "layers": list(graph.get(gid).layers)} for gid, why in unrounded.items()}
    layers = {lay for d in detail.values() for lay in d["layers"]}  # a layer may sit in two groups (in and out)
    return {"round_to": round_to, "unrounded": detail, "unrounded_layers": len(layers)}


def _costs(c: Costs, top1: float | None) -> dict[str, Any]:
    d: dict[str, Any] = c.to_dict()
    if top1 is not None:
        d["top1"] = round(top1, 2)
    return d


def verification(unpruned: torch.nn.Module, example: torch.Tensor, ignore: list[str], graph: ModelGraph,
                 probe: verify.Verdict) -> dict[str, Any]:
    """The report's ``verification``: the probe of every group, and the plan checked on the unpruned model
    (``unpruned``, a copy of the model before pruning, is used up).

    Raises:
        RuntimeError: the plan's removal differs from masking on a group the probe passed (a bug; never
            a silently wrong artifact).
    """
    removal = {g.id: set(range(full)) - set(g.kept) for g, full in zip(graph.groups, graph.full_widths)
               if len(g.kept) < full}
    final = verify.check(unpruned, example, ignore, removal, owned=True) if removal else verify.Verdict()
    if final.failed:
        gid, why = next(iter(final.failed.items()))
        raise RuntimeError(f"the plan does not verify: group {gid} {why}")
    return {**probe.to_dict(), "plan_verified": bool(removal), "seconds": round(probe.seconds + final.seconds, 2)}


@dataclass
class RunSummary:
    """What the run decided and measured, besides its settings and its job."""

    metric: str
    normalize: str
    schedule: str
    recover: str
    trains_while_pruning: bool
    base: Costs
    pruned: Costs
    base_top1: Mapping[str, float]
    final: Mapping[str, float]
    rounding: dict[str, Any]
    budget: int
    world_size: int
    resumed_from: int | None


def build_report(cfg: CompressConfig, job: Job, run: RunSummary) -> dict[str, Any]:
    """The report's main body (``latency``, ``warnings``, ``verification`` and ``seconds`` are added by the run)."""
    stages = job.state.stages
    evals = {spec: {"base": run.base_top1.get(spec), "after_pruning": stages.get("after_pruning", {}).get(spec),
                    "after_bn_recalibration": stages.get("after_bn_recalibration", {}).get(spec), "final": top1}
             for spec, top1 in run.final.items()}
    primary = next(iter(run.final), None)  # the primary test split comes first
    prim = evals.get(primary, {}) if primary else {}
    progressive = run.trains_while_pruning
    tr = cfg.training
    return {
        "model": cfg.model,
        "metric": run.metric,  # what "top1" and "eval" hold: top-1 (classifiers) or mAP@0.5 (detectors)
        "criterion": cfg.selection.criterion,
        "normalize": run.normalize,
        "schedule": run.schedule,
        "recover": run.recover,
        "targets": dict(cfg.selection.targets),
        "base": _costs(run.base, prim.get("base")),
        "pruned": _costs(run.pruned, prim.get("final")),
        "ratios": {k: round(v, 4) for k, v in run.pruned.ratio(run.base).items()},
        "top1_after_pruning": prim.get("after_pruning"),
        "top1_after_bn_recalibration": prim.get("after_bn_recalibration"),
        "eval": evals,
        "data": cfg.data,
        "finetune_epochs": tr.finetune_epochs,
        "iterations": {"budget": run.budget, "pruning": job.state.pruned_at, "done": job.state.iteration},
        "training": {**tr.model_dump(include={"batch_size", "lr", "optimizer", "kd", "teacher", "kd_alpha",
                                               "kd_temperature"}), "seed": cfg.seed},
        "interval": cfg.selection.interval if progressive else None,
        "channels_per_step": cfg.selection.channels_per_step if progressive else None,
        "prune_within": cfg.selection.prune_within if progressive else None,
        "groups_pruned": len({r[1] for r in job.state.removals}),
        "channels_removed": job.removed_channels,
        "removals": job.state.removals,
        "rounding": run.rounding,
        "world_size": run.world_size,
        "resumed_from": run.resumed_from,
    }
