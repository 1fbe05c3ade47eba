"""Copies of a model to prune without copying its weights."""

from __future__ import annotations

import copy

from torch import nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules whose parameters and buffers are views of ``model``'s (no
    weight is copied): for edits that replace tensors, as pruning does, never for ones that write
    into them (masking weights, an optimizer step)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    return copy.deepcopy(model, memo)
