"""The compress job's settings and entry point.

This module is light (no torch import) so that the command line can build its
``--target-*`` flags from :data:`TARGETS`; the work itself is in
:mod:`deploykit.compress_job.pipeline`. Extension points are registries, not branches:
a cost target (``--target-NAME``) is a :data:`TARGETS` entry
(:mod:`deploykit.select.targets`, re-exported here) naming the
:class:`~deploykit.graph.costs.Costs` field it bounds; a normalization
(``--normalize``) is a ``deploykit.select.NORMALIZERS`` entry; a criterion a
``deploykit.importance.CRITERIA`` entry; a schedule a
``deploykit.train.schedules.SCHEDULES`` entry.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from deploykit.config import StrictConfig
from deploykit.errors import DeployKitError
from deploykit.progress import Reporter
from deploykit.select.targets import TARGETS, TargetKind

__all__ = ["TARGETS", "TargetKind", "CompressConfig", "SelectionSettings", "TrainingSettings", "LatencySettings",
           "CheckpointSettings", "compress", "check_device", "criteria_names"]

MAX_FINETUNE_EPOCHS = 1000  # --finetune-epochs upper bound


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` with a GPU N on this machine.

    Raises:
        DeployKitError: one line naming the valid devices and whether CUDA is available.
    """
    if device == "cpu":
        return device
    kind, colon, index = device.partition(":")
    well_formed = kind == "cuda" and (not colon or index.isdigit())
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = f"CUDA is available with {n} GPU(s): cuda:0..cuda:{n - 1}" if n else "CUDA is not available on this machine"
    if not well_formed:
        raise DeployKitError(f"--device {device!r} is not a device; valid: cpu, cuda, cuda:N ({gpus})")
    if not n:
        raise DeployKitError(f"--device {device!r}: {gpus}; valid here: cpu")
    if index and int(index) >= n:
        raise DeployKitError(f"--device {device!r}: no such GPU ({gpus}); valid: cpu, cuda, cuda:0..cuda:{n - 1}")
    return device


class SelectionSettings(StrictConfig):
    """What goes: the cost targets, and how channels are scored, ranked, rounded and scheduled.

    Targets are ``{NAME: RATIO}`` for names in :data:`TARGETS`; all must be met.
    """

    targets: dict[str, float] = {}
    criterion: str = "fisher"
    normalize: str | None = None
    round_to: int | str = 8  # N, "BLOCK:STEP" or "auto"
    max_ratio: float = Field(0.9, gt=0, lt=1, allow_inf_nan=False)
    schedule: str = "oneshot"
    recover: str | None = None
    interval: int = Field(10, ge=1)
    channels_per_step: int = Field(1, ge=1)
    prune_within: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    calib_batches: int = Field(8, ge=1)

    FLAG_OF_KEY: ClassVar[dict[str, str]] = {"targets": "target-{}"}

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            flags = ", ".join(f"--target-{n}" for n in TARGETS.names())
            raise DeployKitError(f"no target: pass at least one of {flags}")
        from deploykit.select.global_rank import check_ratio

        for name, ratio in v.items():
            TARGETS.get(name)
            check_ratio(f"--target-{name}", ratio)
        return v

    @field_validator("round_to", mode="before")
    @classmethod
    def _round_to(cls, v: Any) -> Any:
        # "auto": widths at the low side of latency steps, from the latency table.
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        from deploykit.select.block_rounding import ROUND_TO_CHOICES, BlockRounding

        if isinstance(v, str) and ":" in v:
            return str(BlockRounding.parse(v.strip()))
        try:
            k = int(v)
        except (TypeError, ValueError):
            raise DeployKitError(f"--round-to {v!r}: give {ROUND_TO_CHOICES}") from None
        if k < 1:
            raise DeployKitError(f"--round-to {v!r}: give {ROUND_TO_CHOICES}")
        return k


class LatencySettings(StrictConfig):
    """The latency table and how often a latency target is checked by timing."""

    lut: str | None = None
    latency_checks: int = Field(3, ge=0)


class TrainingSettings(StrictConfig):
    """Fine-tuning, distillation and BatchNorm recalibration."""

    batch_size: int = Field(64, ge=1)
    # Floats are finite (inf epochs overflowed in the schedule, nan passed every bound) and
    # the budget is bounded: more than MAX_FINETUNE_EPOCHS is a typo, not a plan.
    finetune_epochs: float = Field(0.0, ge=0, le=MAX_FINETUNE_EPOCHS, allow_inf_nan=False)
    lr: float = Field(0.01, gt=0, allow_inf_nan=False)
    optimizer: str = "sgd"
    weight_decay: float = Field(5e-4, ge=0, allow_inf_nan=False)
    kd: bool = False
    teacher: str | None = None
    teacher_weights: str | None = None
    kd_alpha: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    kd_temperature: float = Field(4.0, gt=0, allow_inf_nan=False)
    bn_batches: int = Field(20, ge=0)


class CheckpointSettings(StrictConfig):
    """Writing checkpoints, and resuming from them."""

    checkpoint_every: int = Field(0, ge=0)
    resume: bool = False


# The groups of CompressConfig, in order: the field holding each, and its settings class.
_GROUPS: dict[str, type[StrictConfig]] = {"selection": SelectionSettings, "latency": LatencySettings,
                                          "training": TrainingSettings, "checkpointing": CheckpointSettings}
# The group of every grouped setting, by its flat name (the CLI flag's).
_GROUP_OF: dict[str, str] = {name: group for group, cls in _GROUPS.items() for name in cls.model_fields}


class CompressConfig(StrictConfig):
    """Settings of one compress run, grouped by concern (the way timm's ``PretrainedCfg`` groups its own).

    Given flat, by the CLI flags' names (``lr=0.02``, ``target_macs=0.5``, ``round_to=8``), each
    setting lands in its group (``training.lr``, ``selection.targets``, ``selection.round_to``);
    groups may also be given whole (``training={"lr": 0.02}``). Flat names still read:
    ``cfg.lr`` is ``cfg.training.lr``. Targets are given as ``target_NAME=RATIO`` for every NAME
    in :data:`TARGETS` (``target_macs=0.5``) or as ``targets={"macs": 0.5}``; all must be met.
    """

    model: str
    out: str
    selection: SelectionSettings = SelectionSettings()
    latency: LatencySettings = LatencySettings()
    data: str | None = None
    eval_data: list[str] = []
    training: TrainingSettings = TrainingSettings()
    checkpointing: CheckpointSettings = CheckpointSettings()
    device: str = "cpu"
    weights: str | None = None
    input_shape: str | None = None
    ignore: list[str] = []
    seed: int = 0
    force: bool = False
    evaluate_base: bool = True
    evaluate_stages: bool = True  # top-1 after pruning and after BN recalibration (costs time, changes nothing)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        groups = {g: dict(data.pop(g, None) or {}) for g in _GROUPS}
        targets = dict(groups["selection"].pop("targets", None) or {})
        targets.update(data.pop("targets", None) or {})
        for key in [k for k in data if k.startswith("target_")]:
            value = data.pop(key)
            if value is not None:
                targets[key[len("target_"):]] = value
        for key in [k for k in data if k in _GROUP_OF]:
            groups[_GROUP_OF[key]][key] = data.pop(key)
        groups["selection"]["targets"] = targets  # always validated: no target at all is an error
        return {**data, **groups}

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: the flat names of grouped settings.
        group = _GROUP_OF.get(name)
        if group is None:
            return super().__getattr__(name)
        return getattr(getattr(self, group), name)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (as the CLI flags and checkpoints name them)."""
        settings = self.model_dump(exclude=set(_GROUPS))
        for group in _GROUPS:
            settings.update(getattr(self, group).model_dump())
        return settings


def compress(reporter: Reporter | None = None, **kwargs: Any) -> dict[str, Any]:
    """Compress a model to cost targets and write an artifact directory.

    Keyword arguments are those of :class:`CompressConfig` (``model``, ``out``,
    ``target_macs``, ``criterion``, ``schedule``, ``data``, ...). Under ``torchrun``
    every process calls this; rank 0 writes. Returns the report that is also
    written to ``out/report.json``.

    Raises:
        DeployKitError: bad input; nothing is written.
    """
    cfg = CompressConfig.parse(**kwargs)
    from deploykit.compress_job.pipeline import run

    return run(cfg, reporter or Reporter())


def criteria_names() -> list[str]:
    """Every criterion name ``compress`` accepts (the scoring criteria and the searches, ``blend`` and ``ga``)."""
    from deploykit.importance import CRITERIA
    from deploykit.train import search  # noqa: F401  (registers the criteria that are searches)

    return CRITERIA.names()
