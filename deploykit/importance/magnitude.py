"""Filter-norm criteria, wrapping Torch-Pruning's GroupMagnitudeImportance."""

from __future__ import annotations

import torch
import torch_pruning as tp

from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Importance, ScoringContext


class GroupNorm(Importance):
    """Lp norm of each channel's weights, summed over every layer of the coupled group."""

    def __init__(self, p: int) -> None:
        self._tp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="sum", normalizer=None)

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        return self._tp(ctx.graph.tp_group(group))


CRITERIA.register("l1", lambda: GroupNorm(1))
CRITERIA.register("l2", lambda: GroupNorm(2))
