"""Criteria that run their own schedule, and the ``search`` schedule for those that choose channels themselves.

A criterion may name the schedule it needs in a ``schedule`` attribute: the search
methods (``ga``, ``blend``) choose the removed channels with the whole job in view
(targets, cost model, calibration data, evaluation) and say ``"search"``; ``dcff``
fuses filters while training and says ``"dcff"``. :func:`resolve_schedule` picks it
when the user left ``--schedule`` at its default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from deploykit.errors import DeployKitError
from deploykit.importance.base import CRITERIA, Importance
from deploykit.train.job import Job
from deploykit.train.loop import cosine_lr
from deploykit.train.schedules import SCHEDULES
from deploykit.train.surgery import remove_channels

DEFAULT_SCHEDULE = "oneshot"


@runtime_checkable
class SelectsChannels(Protocol):
    """A criterion that decides the removal itself: ``{group id: original channel indices}``."""

    def select(self, job: Job) -> dict[str, list[int]]: ...


def resolve_schedule(criterion: Importance, criterion_name: str, requested: str, recover: str) -> str:
    """The schedule a job runs: the criterion's own when it has one, else ``requested``.

    Raises:
        DeployKitError: the user asked for another schedule than the criterion's own, or for a
            recovery step the criterion's schedule cannot take.
    """
    own = getattr(criterion, "schedule", None)
    if own is None:
        owners = {n: getattr(CRITERIA.get(n)(), "schedule", None) for n in CRITERIA.names()}
        users = [n for n, s in owners.items() if s == requested]
        if users:  # a criterion's own schedule cannot run another criterion
            raise DeployKitError(f"--schedule {requested} runs only with --criterion {' or '.join(users)}")
        return requested
    if requested not in (DEFAULT_SCHEDULE, own):
        raise DeployKitError(f"criterion {criterion_name!r} runs its own schedule ({own}); leave out --schedule {requested}")
    if own == "dcff" and recover != "none":
        raise DeployKitError(f"--recover {recover} does not combine with criterion dcff (its filters are fused while "
                             "training); use --recover none")
    return own


def apply_removal(job: Job, removal: Mapping[str, Sequence[int]]) -> int:
    """Remove exactly ``removal`` (rank 0's, on every process); record it like :meth:`Job.remove`."""
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


@SCHEDULES.register("search")
class Search:
    """Remove the channels the criterion's search picks, once; then fine-tune (cosine)."""

    trains_while_pruning = False

    def run(self, job: Job) -> None:
        if job.state.pruned_at is None:
            crit = job.criterion
            if not isinstance(crit, SelectsChannels):
                raise DeployKitError(f"the search schedule needs a criterion that selects channels; "
                                     f"{type(crit).__name__} only scores them")
            apply_removal(job, crit.select(job))
            job.pruning_done()
            job.save()
        job.finetune(lambda it: cosine_lr(it, job.total, job.lr))
