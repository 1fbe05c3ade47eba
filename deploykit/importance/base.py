"""The criterion contract and its registry.

A criterion scores every channel of a group (higher = keep). Data-driven criteria
see calibration batches through :meth:`Importance.accumulate` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.groups import Group, ModelGraph
from deploykit.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ScoringContext:
    """What a criterion may look at.

    Attributes:
        model: the model being pruned.
        graph: its coupled channel groups.
        loss_fn: per-batch loss, summed over samples (so per-sample gradients are not scaled).
        all_reduce: sums a tensor across processes (identity on one process).
    """

    model: nn.Module
    graph: ModelGraph
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(
        default=lambda out, y: F.cross_entropy(out, y, reduction="sum")
    )
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)


class Importance:
    """Base class: ``score(group, ctx) -> Tensor[channels]``, higher = keep.

    Class attributes:
        requires_data: whether :meth:`accumulate` must see calibration batches.
        default_normalize: the cost a score is divided by in global ranking
            (``memory``, ``flops``, ``params``, ``latency`` or ``none``).
        comparable: whether raw scores compare across groups; if not, global
            ranking divides each group's scores by their mean.
    """

    requires_data = False
    default_normalize = "none"
    comparable = False

    def reset(self) -> None:
        """Forget accumulated statistics."""

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        """Update statistics with one calibration batch."""

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        """Per-channel importance of ``group``'s current channels."""
        raise NotImplementedError


CRITERIA: Registry[Callable[[], Importance]] = Registry("criterion")


def score_groups(
    criterion: Importance, ctx: ScoringContext, calibration: Iterable[Batch] | None = None
) -> dict[str, torch.Tensor]:
    """Run calibration (if the criterion needs data) and score every prunable group."""
    if criterion.requires_data:
        if calibration is None:
            raise ValueError("this criterion needs calibration data")
        criterion.reset()
        for batch in calibration:
            criterion.accumulate(ctx, batch)
    return {g.id: criterion.score(g, ctx).detach().float().cpu() for g in ctx.graph.prunable()}
