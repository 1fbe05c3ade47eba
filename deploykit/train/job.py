"""What a pruning schedule acts on, and the steps every schedule shares.

A :class:`Job` holds the model being pruned, its channel groups and cost model,
the criterion, the selection settings, the trainer and the batch stream; its
methods are the moves a schedule makes: train one step (letting the criterion
observe it), remove the next channels, declare the targets met, fine-tune to the
end of the budget. Its :class:`PruneState` is everything a checkpoint needs
besides tensors, so a schedule resumes by simply continuing from ``state``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from deploykit.importance.base import Batch, Importance, ScoringContext
from deploykit.progress import Task
from deploykit.select import SelectConfig, Target, select_global
from deploykit.select.latency_aim import LatencyAim
from deploykit.select.targets import LATENCY_COST
from deploykit.train.distributed import Dist
from deploykit.train.loop import Trainer
from deploykit.train.stream import BatchStream
from deploykit.train.surgery import remove_channels


# A target no model meets: makes selection take chunks past the real targets.
_NEVER_MET = Target("macs", -1.0)


@runtime_checkable
class ObservesTraining(Protocol):
    """A criterion that accumulates from the training step's own forward and backward pass."""

    def observe(self, ctx: ScoringContext, scale: float) -> contextlib.AbstractContextManager[None]: ...


@runtime_checkable
class Stateful(Protocol):
    """A criterion whose accumulated statistics go into checkpoints."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class PruneState:
    """Progress of a schedule (JSON in checkpoints).

    Attributes:
        iteration: training iterations done.
        pruned_at: the iteration at which every target was met (None: still pruning).
        removals: ``[iteration, group id, original channel indices]`` per removal, in order.
        stages: top-1 by stage (``after_pruning``, ``after_bn_recalibration``) and data spec.
        latency_checks: each time the pruned model was timed against the base: why
            (``progress`` while pruning, ``met`` when the prediction met the targets), the
            predicted and measured latency ratios, and the predicted ratio aimed at next.
    """

    iteration: int = 0
    pruned_at: int | None = None
    removals: list[list[Any]] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruneState:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


class JobHooks:
    """What the caller does at a job's events; each does nothing here.

    The compress job overrides them (:mod:`deploykit.compress_job.pipeline`): evaluation and
    BatchNorm recalibration once the targets are met, progress and due checkpoints after each
    iteration, and a checkpoint on request.
    """

    def on_pruned(self, job: Job) -> None:
        """Called once when the targets are met."""

    def on_step(self, job: Job, loss: float) -> None:
        """Called after every iteration's work."""

    def save(self, job: Job) -> None:
        """Write a checkpoint now (when checkpointing is on)."""


@dataclass(frozen=True)
class Pace:
    """How far and how fast a schedule goes.

    Attributes:
        total: the fine-tuning budget in iterations (0: no training).
        lr: peak learning rate.
        interval, channels_per_step: progressive pruning: every ``interval`` iterations
            remove ``channels_per_step`` chunks (a chunk is one channel, or ``round_to``).
        prune_within: progressive pruning: finish within this fraction of the budget
            (removals grow as needed); None: no deadline.
    """

    total: int = 0
    lr: float = 0.01
    interval: int = 10
    channels_per_step: int = 1
    prune_within: float | None = None


@dataclass
class Job:
    """A model being pruned toward cost targets, and the means to train it.

    Attributes:
        pace: the budget and the progressive schedule's pacing.
        calibration: fresh calibration batches for criteria that score before training.
        hooks: what the caller does when the targets are met, after each iteration, and when a
            checkpoint is asked for.
        checkpoints: whether :meth:`save` writes (a schedule whose state no checkpoint holds
            turns it off).
        latency: when and how a latency target is checked by timing (it re-aims :attr:`select`);
            None: a latency target is met on the table's prediction alone.
    """

    model: nn.Module
    graph: ModelGraph
    cost_model: CostModel
    criterion: Importance
    scoring: ScoringContext
    select: SelectConfig
    comparable: bool
    dist: Dist
    trainer: Trainer | None = None
    stream: BatchStream | None = None
    pace: Pace = field(default_factory=Pace)
    calibration: Callable[[], Iterable[Batch]] | None = None
    hooks: JobHooks = field(default_factory=JobHooks)
    checkpoints: bool = True
    state: PruneState = field(default_factory=PruneState)
    task: Task | None = None
    latency: LatencyAim | None = None

    # -- costs -----------------------------------------------------------------------------------
    def ratios(self) -> dict[str, float]:
        """Predicted costs now as fractions of the base (``macs``, ``params``, ``activation_bytes``)."""
        return self.cost_model.predict().ratio(self.cost_model.base)

    def targets_met(self) -> bool:
        """Whether the current widths meet every target."""
        now = self.cost_model.predict()
        return all(t.met(now, self.cost_model.base) for t in self.select.targets)

    # -- pruning ---------------------------------------------------------------------------------
    def scores(self) -> dict[str, torch.Tensor]:
        """The criterion's current scores of every prunable group (summed over processes)."""
        return {g.id: self.criterion.score(g, self.scoring).detach().double().cpu() for g in self.graph.prunable()}

    def remove(self, scores: dict[str, torch.Tensor], max_chunks: int | None = None, beyond_targets: bool = False) -> int:
        """Remove the globally cheapest chunks under ``scores`` (all needed for the targets, or ``max_chunks``).

        With ``beyond_targets`` chunks go even if the predicted costs already meet the
        targets. Rank 0's choice is broadcast, so processes can never disagree on the
        architecture. Returns the number of channels removed.
        """
        cfg = replace(self.select, max_chunks=max_chunks)
        if beyond_targets:
            cfg = replace(cfg, targets=[_NEVER_MET])
        sel = select_global(self.cost_model, scores, cfg, comparable=self.comparable)
        return apply_removal(self, sel.remove)

    def measured_met(self) -> bool:
        """Whether the model, measured by a forward pass, meets every target."""
        # The graph's module: a detector's traced core, whose costs the targets are about.
        x = self.graph.example_input.to(next(self.model.parameters()).device)
        now = measure(self.graph.model, x)
        return all(t.met(now, self.cost_model.base) for t in self.select.targets)

    def chunks_to_target(self, scores: dict[str, torch.Tensor]) -> int:
        """How many chunks a selection under ``scores`` still needs to meet the targets (a dry run)."""
        sel = select_global(self.cost_model, scores, self.select, comparable=self.comparable)
        return math.ceil(sum(len(v) for v in sel.remove.values()) / max(1, self.select.round_to))

    def pruning_done(self, scores: dict[str, torch.Tensor] | None = None) -> None:
        """Record that the targets are met at the current iteration and run the ``on_pruned`` hook.

        Selection works on predicted costs; should the measured model still exceed a
        target (a cost the prediction misses), the cheapest chunks go one at a time
        until the measurement agrees. A latency target is checked by timing
        (:meth:`latency_missed`); for every miss the cheapest chunks under ``scores``
        (a one-shot schedule's own ranking; default: the criterion's current scores) go.
        """
        self._meet_measured_costs()
        while self.latency_missed():
            if self.remove(scores if scores is not None else self.scores()) == 0:
                break  # nothing more can go (--max-ratio); the report shows the miss
        self.state.pruned_at = self.state.iteration
        self.hooks.on_pruned(self)

    def step_done(self, loss: float) -> None:
        """An iteration's work is done: the ``on_step`` hook (progress, checkpoints when due)."""
        self.hooks.on_step(self, loss)

    def save(self) -> None:
        """Write a checkpoint now, through the ``save`` hook, unless :attr:`checkpoints` is off."""
        if self.checkpoints:
            self.hooks.save(self)

    def _meet_measured_costs(self) -> None:
        while not (self.targets_met() and self.measured_met()):
            if self.remove(self.scores(), max_chunks=1, beyond_targets=True) == 0:
                r = self.ratios()
                raise DeployKitError(
                    "cannot reach the targets: now at " + ", ".join(f"{k} {v:.3f}" for k, v in r.items())
                    + "; raise the targets or --max-ratio, or lower --round-to"
                )

    def latency_missed(self) -> bool:
        """Time the model against the base once the predicted costs meet the targets (see
        :class:`~deploykit.select.latency_aim.LatencyAim`); on a miss, aim the selection lower.

        True means "prune on": the schedule then removes more, as it removes anything, and
        calls this again. False: met, the rounds are spent, or there is nothing to check.
        """
        if self.latency is None:
            return False
        aimed = self.latency.when_met(self.select, self.ratios().get(LATENCY_COST), self.graph.model,
                                      self.state.latency_checks, self.state.iteration)
        if aimed is None:
            return False
        self.select = aimed
        return True

    def aim_latency(self, scores: dict[str, torch.Tensor]) -> None:
        """Before a one-shot removal under ``scores``: time candidate selections as pruned copies and
        aim the selection where the measurement puts the latency target
        (:meth:`LatencyAim.before_removal`); nothing is removed here."""
        aim = self.latency
        if aim is None or aim.pruned_copy is None:
            return
        pruned_copy = aim.pruned_copy

        def candidate(select: SelectConfig) -> tuple[float | None, nn.Module]:
            sel = select_global(self.cost_model, scores, replace(select, max_chunks=None), comparable=self.comparable)
            widths = {g.id: g.channels - len(sel.remove.get(g.id, ())) for g in self.graph.prunable()}
            predicted = sel.predicted.ratio(self.cost_model.base).get(LATENCY_COST) if sel.predicted else None
            return predicted, pruned_copy(widths)

        self.select = aim.before_removal(self.select, candidate, self.state.latency_checks, self.state.iteration)

    def reaim_latency(self) -> None:
        """While pruning gradually: time the model now and then and aim the selection where the
        measurement puts the latency target (:meth:`LatencyAim.on_the_way`)."""
        if self.latency is None:
            return
        aimed = self.latency.on_the_way(self.select, self.ratios().get(LATENCY_COST), self.graph.model,
                                        self.state.latency_checks, self.state.iteration)
        if aimed is not None:
            self.select = aimed

    @property
    def removed_channels(self) -> int:
        """Channels removed so far."""
        return sum(len(r[2]) for r in self.state.removals)

    # -- training --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _observing(self, batch: Batch) -> Iterator[None]:
        crit = self.criterion
        if isinstance(crit, ObservesTraining):
            # The training loss averages over this process's samples; scale to per-sample gradients.
            with crit.observe(self.scoring, scale=float(batch[0].shape[0])):
                yield
        else:
            yield

    def train_step(self, lr: float, observe: bool = False) -> float:
        """One iteration on the next batch; with ``observe``, the criterion accumulates from it."""
        assert self.trainer is not None and self.stream is not None
        batch = self.stream.batch(self.state.iteration)
        ctx = self._observing(batch) if observe else contextlib.nullcontext()
        loss = self.trainer.step(*batch, lr=lr, observe=ctx)
        if observe and self.criterion.requires_data and not isinstance(self.criterion, ObservesTraining):
            # A data-driven criterion that cannot read the training step gets its own pass.
            self.criterion.accumulate(self.scoring, (batch[0].to(self.trainer.device), batch[1].to(self.trainer.device)))
        self.state.iteration += 1
        return loss

    def finetune(self, lr_at: Callable[[int], float]) -> None:
        """Train with learning rate ``lr_at(iteration)`` until the budget is spent."""
        while self.state.iteration < self.pace.total:
            loss = self.train_step(lr_at(self.state.iteration))
            self.step_done(loss)


def apply_removal(job: Job, removal: Mapping[str, Sequence[int]]) -> int:
    """Remove exactly ``removal`` from ``job`` (rank 0's, on every process) and record it in ``job.state``.

    The one way channels leave a job: :meth:`Job.remove` after its selection, and the
    schedules whose criterion chooses the channels itself. Returns the channels removed.
    """
    removal = job.dist.broadcast({gid: list(idxs) for gid, idxs in removal.items() if idxs})
    if not removal:
        return 0
    optimizer = job.trainer.optimizer if job.trainer is not None else None
    n = remove_channels(job.graph, removal, optimizer)
    if job.trainer is not None:
        job.trainer.model_changed()
    for gid, idxs in removal.items():
        job.state.removals.append([job.state.iteration, gid, list(idxs)])
    return n
