"""Everything a compress run checks before slow work: registry names, flag combinations, the
output directory, the data, the teacher and whether the targets are reachable at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deploykit.atomic import check_out_dir
from deploykit.compression import CompressConfig
from deploykit.data import ImageDataset, load_dataset, model_classes
from deploykit.data.splits import with_split
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import get_criterion
from deploykit.importance.base import Importance
from deploykit.prune.reconstruct import RECOVERIES, Recovery
from deploykit.select import NORMALIZERS, SelectConfig, Target, select_global
from deploykit.select.targets import TARGETS
from deploykit.train import dcff  # noqa: F401  (registers the dcff schedule)
from deploykit.train import detection  # noqa: F401  (registers the detection task)
from deploykit.train.loop import OPTIMIZERS
from deploykit.train.schedules import SCHEDULES, Schedule
from deploykit.train.search import resolve_schedule
from deploykit.zoo import build_model

CHECKPOINTS = "checkpoints"  # the subdirectory of --out that holds checkpoints


@dataclass
class Resolved:
    """The registry entries a run's names resolve to."""

    criterion: Importance
    normalize: str
    schedule: Schedule
    targets: list[Target]
    schedule_name: str
    recover: Recovery
    recover_name: str


def resolve(cfg: CompressConfig) -> Resolved:
    """Look every name up in its registry (unknown names list the valid ones) and check flag combinations.

    Raises:
        DeployKitError: an unknown name, or flags that do not go together.
    """
    criterion = get_criterion(cfg.selection.criterion)
    normalize = cfg.selection.normalize or criterion.default_normalize
    NORMALIZERS.get(normalize)
    OPTIMIZERS.get(cfg.training.optimizer)
    recover_name = cfg.selection.recover or getattr(criterion, "default_recover", "none")
    recover = RECOVERIES.get(recover_name)
    schedule_name = resolve_schedule(criterion, cfg.selection.criterion, cfg.selection.schedule, recover_name)
    schedule = SCHEDULES.get(schedule_name)()
    targets = [Target(TARGETS.get(name).cost, ratio) for name, ratio in cfg.selection.targets.items()]
    if criterion.requires_data and not cfg.data:
        raise DeployKitError(f"criterion {cfg.selection.criterion!r} needs calibration data: pass --data SPEC")
    if cfg.training.finetune_epochs > 0 and not cfg.data:
        raise DeployKitError("--finetune-epochs needs --data")
    if schedule.trains_while_pruning and (not cfg.data or cfg.training.finetune_epochs <= 0):
        raise DeployKitError(f"--schedule {cfg.selection.schedule} prunes while fine-tuning: "
                             "pass --data and --finetune-epochs")
    if (cfg.training.teacher or cfg.training.teacher_weights) and not cfg.training.kd:
        raise DeployKitError("--teacher distils: pass --kd with it")
    if cfg.training.teacher_weights and not cfg.training.teacher:
        raise DeployKitError("--teacher-weights needs --teacher MODEL")
    if recover_name != "none" and not cfg.data:
        raise DeployKitError(f"--recover {recover_name} needs calibration data: pass --data SPEC")
    return Resolved(criterion, normalize, schedule, targets, schedule_name, recover, recover_name)


def check_output(cfg: CompressConfig, out: Path) -> None:
    """A non-empty ``--out`` needs ``--force``; with ``--resume`` our own checkpoints may be there."""
    if cfg.checkpointing.resume and out.is_dir() and not cfg.force:
        other = [p.name for p in out.iterdir() if p.name != CHECKPOINTS]
        if other:
            raise DeployKitError(f"output directory {out} holds more than checkpoints ({other[0]}); pass --force to replace it")
        return
    check_out_dir(out, cfg.force)


@dataclass
class Data:
    """The training split and the evaluation sets of a run."""

    train: ImageDataset | None
    evals: dict[str, ImageDataset]  # the primary test split first

    @classmethod
    def load(cls, cfg: CompressConfig) -> Data:
        """Load ``--data`` (train and test splits) and every ``--eval-data``."""
        train = load_dataset(with_split(cfg.data, "train")) if cfg.data else None
        specs = ([with_split(cfg.data, "test")] if cfg.data else []) + [s for s in cfg.eval_data]
        return cls(train, {s: load_dataset(s) for s in dict.fromkeys(specs)})

    @property
    def primary(self) -> str | None:
        """The data spec whose top-1 the report's headline numbers hold."""
        return next(iter(self.evals), None)


def reachable(cost_model: CostModel, graph: ModelGraph, sel_cfg: SelectConfig) -> dict[str, str]:
    """Raise when no selection can meet the targets; returns groups left unrounded."""
    zeros = {g.id: torch.zeros(g.channels) for g in graph.prunable()}
    sel = select_global(cost_model, zeros, sel_cfg)
    if not sel.met:
        best = sel.predicted.ratio(cost_model.base) if sel.predicted else {}
        unmet = [t for t in sel_cfg.targets if not t.met(sel.predicted, cost_model.base)] if sel.predicted else sel_cfg.targets
        t = unmet[0]
        raise DeployKitError(
            f"cannot reach {t.ratio} of the {t.kind}: at most {best.get(t.kind, 1.0):.3f} with round-to "
            f"{sel_cfg.round_to} and max-ratio {sel_cfg.max_ratio}; raise the target or --max-ratio"
        )
    return sel.unrounded


def teacher(cfg: CompressConfig, shape: tuple[int, ...] | None, student: torch.nn.Module,
            example: torch.Tensor) -> torch.nn.Module:
    """The model ``--kd`` distils from: ``--teacher`` when given, else the unpruned model."""
    if cfg.training.teacher is None:
        return build_model(cfg.model, weights=cfg.weights, input_shape=shape).model.to(cfg.device)
    model = build_model(cfg.training.teacher, weights=cfg.training.teacher_weights, input_shape=shape).model
    widths = [model_classes(m, example) for m in (model, student)]
    if widths[0] != widths[1]:
        raise DeployKitError(f"--teacher {cfg.training.teacher} has {widths[0]} outputs, the model {widths[1]}: "
                             "distillation needs the same classes")
    return model.to(cfg.device)
