"""Pruning schedules: when channels are removed relative to fine-tuning.

``oneshot``: score on calibration batches, remove everything the targets ask for at
once, then fine-tune for the whole budget (cosine learning rate).

``progressive`` (Group Fisher's schedule): fine-tune from the first iteration; the
criterion accumulates from the training steps; every ``interval`` iterations the
globally cheapest channel (or ``channels_per_step`` chunks, costs recomputed after
each; or as many as it takes to finish within ``prune_within`` of the budget) is
removed and the accumulators are reset, until every target is met. The
learning rate stays at its peak while the network shrinks, then decays by cosine
over the rest of the budget. If the targets are met only after the budget is spent,
pruning still finishes (the report says how many iterations it took) and there is
no fine-tuning left.

A latency target is met by measurement where the table's backend runs here: one-shot
first times candidate selections as pruned copies and removes the least-pruned one that
measured at or below the target (the aim may rise above it where the table is
pessimistic), then times the pruned model and removes more of its own ranking on a miss; progressive also
times it on the way (every 0.1 of predicted latency) and re-aims the prediction, so the
correction left at the end is small (see :meth:`Job.latency_missed` and :class:`~deploykit.select.latency_aim.LatencyAim`).

A schedule is a small class with ``run(job)``; register new ones in :data:`SCHEDULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from deploykit.importance.base import score_groups
from deploykit.registry import Registry
from deploykit.train.job import Job
from deploykit.train.loop import cosine_lr


class Schedule(Protocol):
    """``run(job)`` prunes ``job.model`` to its targets and spends its training budget.

    Attributes:
        trains_while_pruning: whether it needs training data and a budget to prune at all.
    """

    trains_while_pruning: bool

    def run(self, job: Job) -> None: ...


SCHEDULES: Registry[Callable[[], Schedule]] = Registry("schedule")


@SCHEDULES.register("oneshot")
class OneShot:
    """Prune once from calibration scores, then fine-tune."""

    trains_while_pruning = False

    def run(self, job: Job) -> None:
        if job.state.pruned_at is None:
            calib = job.calibration() if job.criterion.requires_data and job.calibration is not None else None
            scores = score_groups(job.criterion, job.scoring, calib)
            job.aim_latency(scores)  # timed candidates first: the table's aim may over- or under-shoot
            job.remove(scores)
            job.pruning_done(scores)  # measured slower than predicted: more of the same ranking goes
            job.save()  # a checkpoint here spares a resumed run the calibration
        job.finetune(lambda it: cosine_lr(it, job.pace.total, job.pace.lr))


@SCHEDULES.register("progressive")
class Progressive:
    """Remove a channel every ``interval`` iterations while fine-tuning, until the targets are met."""

    trains_while_pruning = True

    def run(self, job: Job) -> None:
        while job.state.pruned_at is None:
            if self.done(job):
                job.pruning_done()
                break
            loss = job.train_step(job.pace.lr, observe=True)
            if job.state.iteration % job.pace.interval == 0:
                scores = job.scores()
                removed = job.remove(scores, max_chunks=self.chunks(job, scores))
                job.criterion.reset()
                job.reaim_latency()
                if removed == 0 or self.done(job):
                    job.pruning_done()  # raises when nothing is left to remove and a target is unmet
            job.step_done(loss)
        start = job.state.pruned_at or 0
        job.finetune(lambda it: cosine_lr(it - start, job.pace.total - start, job.pace.lr))

    @staticmethod
    def done(job: Job) -> bool:
        """The predicted costs meet the targets and, where latency is timed, so does the measurement
        (a miss lowers the latency aim and pruning goes on, one removal per interval as before)."""
        return job.targets_met() and not job.latency_missed()

    @staticmethod
    def chunks(job: Job, scores: dict) -> int:
        """Chunks to remove now: ``channels_per_step``, or more when ``prune_within`` asks to finish sooner.

        With ``prune_within = F`` the chunks still needed (a dry run of the selection
        under the current scores) are spread over the removals left before
        ``F × budget`` iterations, so pruning ends in time whatever the scores.
        """
        n = job.pace.channels_per_step
        if job.pace.prune_within is None:
            return n
        end = job.pace.prune_within * job.pace.total
        left = max(1, math.floor((end - job.state.iteration) / job.pace.interval) + 1)
        needed = job.chunks_to_target(scores)
        return max(n, math.ceil(needed / left))
