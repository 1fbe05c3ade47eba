"""The compress job: score, select, remove physically, fine-tune, write the artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator

from deploykit.atomic import check_out_dir
from deploykit.config import StrictConfig
from deploykit.data import ImageDataset, batches, load_dataset
from deploykit.data.splits import with_split
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel, Costs, measure
from deploykit.graph.groups import ModelGraph
from deploykit.importance import CRITERIA, ScoringContext, get_criterion, score_groups
from deploykit.progress import Reporter
from deploykit.prune.artifact import save_artifact
from deploykit.prune.plan import make_plan
from deploykit.select import NORMALIZERS, SelectConfig, Target, select_global
from deploykit.select.global_rank import check_ratio
from deploykit.train.loop import TrainConfig, evaluate, recalibrate_bn, train
from deploykit.zoo import build_model, check_input, parse_shape


class CompressConfig(StrictConfig):
    """Settings of one compress run (the CLI flags, by name)."""

    model: str
    out: str
    target_macs: float
    criterion: str = "fisher"
    data: str | None = None
    calib_batches: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    finetune_epochs: float = Field(0.0, ge=0)
    lr: float = Field(0.01, gt=0)
    kd: bool = False
    weights: str | None = None
    input_shape: str | None = None
    ignore: list[str] = []
    normalize: str | None = None
    round_to: int = Field(1, ge=1)
    max_ratio: float = Field(0.9, gt=0, lt=1)
    seed: int = 0
    force: bool = False

    @field_validator("target_macs")
    @classmethod
    def _ratio(cls, v: float) -> float:
        return check_ratio("--target-macs", v)


def _costs(c: Costs, top1: float | None) -> dict[str, Any]:
    d: dict[str, Any] = c.to_dict()
    if top1 is not None:
        d["top1"] = round(top1, 2)
    return d


def compress(reporter: Reporter | None = None, **kwargs: Any) -> dict[str, Any]:
    """Compress a model to a MACs target and write an artifact directory.

    Keyword arguments are those of :class:`CompressConfig` (``model``, ``out``,
    ``target_macs``, ``criterion``, ``data``, ...). Returns the report that is also
    written to ``out/report.json``.

    Raises:
        DeployKitError: bad input; nothing is written.
    """
    cfg = CompressConfig.parse(**kwargs)
    rep = reporter or Reporter()
    start = time.perf_counter()
    # Validate every name before any slow work, so bad input costs nothing.
    criterion = get_criterion(cfg.criterion)
    normalize = cfg.normalize or criterion.default_normalize
    NORMALIZERS.get(normalize)
    check_out_dir(Path(cfg.out), cfg.force)
    if criterion.requires_data and not cfg.data:
        raise DeployKitError(f"criterion {cfg.criterion!r} needs calibration data: pass --data SPEC")
    train_ds = load_dataset(with_split(cfg.data, "train")) if cfg.data else None
    test_ds = load_dataset(with_split(cfg.data, "test")) if cfg.data else None

    torch.manual_seed(cfg.seed)
    shape = parse_shape(cfg.input_shape) if cfg.input_shape else None
    built = build_model(cfg.model, weights=cfg.weights, input_shape=shape)
    check_input(built)
    model, pre = built.model, built.preprocess
    example = built.example_input()
    graph = ModelGraph(model, example, ignore=cfg.ignore)
    cost_model = CostModel(graph)
    base_costs = cost_model.base
    base_top1 = evaluate(model, test_ds, pre) if test_ds is not None else None

    ctx = ScoringContext(model, graph)
    calib = None
    if criterion.requires_data:
        calib = _progress_batches(rep, "calibrating", train_ds, pre, cfg)
    t0 = time.perf_counter()
    scores = score_groups(criterion, ctx, calib)
    scoring_seconds = time.perf_counter() - t0

    sel_cfg = SelectConfig([Target("macs", cfg.target_macs)], normalize, cfg.round_to, cfg.max_ratio)
    sel = select_global(cost_model, scores, sel_cfg, comparable=criterion.comparable)
    for gid, idxs in sel.remove.items():
        graph.remove(gid, idxs)
    pruned_costs = measure(model, example)
    if pruned_costs.macs > cfg.target_macs * base_costs.macs:
        raise DeployKitError(
            f"cannot reach {cfg.target_macs} of the MACs: at most {pruned_costs.macs / base_costs.macs:.3f} "
            f"with round-to {cfg.round_to} and max-ratio {cfg.max_ratio}; raise the target or --max-ratio"
        )
    top1_pruned = evaluate(model, test_ds, pre) if test_ds is not None else None
    top1_recal = None
    if train_ds is not None:
        recalibrate_bn(model, train_ds, pre)
        top1_recal = evaluate(model, test_ds, pre)
    if cfg.finetune_epochs > 0:
        if train_ds is None:
            raise DeployKitError("--finetune-epochs needs --data")
        teacher = build_model(cfg.model, weights=cfg.weights, input_shape=shape).model if cfg.kd else None
        tcfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                           augment=pre.size[0] >= 32)
        steps = max(1, round(cfg.finetune_epochs * -(-len(train_ds) // cfg.batch_size)))
        with rep.task("fine-tuning", steps) as task:
            train(model, train_ds, pre, tcfg, teacher=teacher, on_step=lambda s, t, loss: task.advance(1, f"loss {loss:.3f}"))
    top1 = evaluate(model, test_ds, pre) if test_ds is not None else None

    report: dict[str, Any] = {
        "model": cfg.model,
        "criterion": cfg.criterion,
        "normalize": normalize,
        "target_macs": cfg.target_macs,
        "base": _costs(base_costs, base_top1),
        "pruned": _costs(pruned_costs, top1),
        "ratios": {k: round(v, 4) for k, v in pruned_costs.ratio(base_costs).items()},
        "top1_after_pruning": None if top1_pruned is None else round(top1_pruned, 2),
        "top1_after_bn_recalibration": None if top1_recal is None else round(top1_recal, 2),
        "data": cfg.data,
        "finetune_epochs": cfg.finetune_epochs,
        "groups_pruned": len(sel.remove),
        "unrounded": sel.unrounded,
        "scoring_seconds": round(scoring_seconds, 3),
    }
    report["seconds"] = round(time.perf_counter() - start, 2)
    plan = make_plan(built, graph, criterion=cfg.criterion, ignore=cfg.ignore)
    save_artifact(cfg.out, model, plan, report, force=cfg.force)
    return report


def _progress_batches(rep: Reporter, label: str, ds: ImageDataset, pre, cfg: CompressConfig):
    n = min(cfg.calib_batches, -(-len(ds) // cfg.batch_size))
    with rep.task(label, n) as task:
        for b in batches(ds, pre, cfg.batch_size, shuffle=True, seed=cfg.seed, limit=n):
            yield b
            task.advance()


def criteria_names() -> list[str]:
    """Registered criterion names."""
    return CRITERIA.names()
