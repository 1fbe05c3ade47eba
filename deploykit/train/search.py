"""Criteria that run their own schedule, and the ``search`` schedule for those that choose channels themselves.

A criterion may name the schedule it needs in a ``schedule`` attribute: the search
methods (``ga``, ``blend``) choose the removed channels with the whole job in view
(targets, cost model, calibration data, evaluation) and say ``"search"``; ``dcff``
fuses filters while training and says ``"dcff"``. :func:`resolve_schedule` picks it
when the user left ``--schedule`` at its default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from deploykit.errors import DeployKitError
from deploykit.importance.base import CRITERIA, Importance
from deploykit.select import blend, ga  # noqa: F401  (registration: the criteria this schedule runs)
from deploykit.train.job import Job, apply_removal
from deploykit.train.loop import cosine_lr
from deploykit.train.schedules import SCHEDULES

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
        job.finetune(lambda it: cosine_lr(it, job.pace.total, job.pace.lr))
