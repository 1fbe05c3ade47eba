"""Removing channels in the middle of training, with the optimizer state carried over.

Physical removal replaces every affected parameter by a smaller one. The optimizer
must then hold the new parameters, and its per-element state (SGD momentum, Adam
moments) must shrink the same way, or each removal would throw away the momentum
of the whole network. Torch-Pruning index-selects a parameter's ``.grad`` along
with the parameter, so we plant in ``.grad`` a tensor whose elements encode their
own flat position (integers stored bit-for-bit in the parameter's dtype); after
the removal the new ``.grad`` lists which old elements survived, for any pruning
function and any number of pruned dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from deploykit.graph.groups import ModelGraph

# Integer types of the same width, so the position survives any copy bit-for-bit.
_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def _marker(p: torch.Tensor) -> torch.Tensor | None:
    itype = _INT_VIEW.get(p.dtype)
    if itype is None or p.numel() >= torch.iinfo(itype).max:
        return None
    return torch.arange(p.numel(), dtype=itype, device=p.device).view(p.dtype).view(p.shape)


def _positions(p: torch.Tensor) -> torch.Tensor | None:
    if p.grad is None or p.dtype not in _INT_VIEW:
        return None
    return p.grad.detach().reshape(-1).view(_INT_VIEW[p.dtype]).long()


def remove_channels(
    graph: ModelGraph, removals: Mapping[str, Sequence[int]], optimizer: torch.optim.Optimizer | None = None
) -> int:
    """Remove ``{group id: original channel indices}`` from the model, updating ``optimizer``.

    Returns the number of channels removed. Gradients are cleared.
    """
    model: nn.Module = graph.model
    before = dict(model.named_parameters())
    planted = set()
    if optimizer is not None:
        for p in before.values():
            m = _marker(p)
            if m is not None:
                p.grad = m
                planted.add(id(p))
    removed = 0
    for gid, idxs in removals.items():
        n = graph.get(gid).channels
        graph.remove(gid, idxs)
        removed += n - graph.get(gid).channels
    after = dict(model.named_parameters())
    if optimizer is not None:
        replace = {}
        for name, new in after.items():
            old = before.get(name)
            if old is None or old is new:
                continue
            replace[id(old)] = new
            state = optimizer.state.pop(old, None)
            if state:
                pos = _positions(new) if id(old) in planted else None
                optimizer.state[new] = _shrink(state, old, new, pos)
        for group in optimizer.param_groups:
            group["params"] = [replace.get(id(p), p) for p in group["params"]]
    for p in model.parameters():
        p.grad = None
    return removed


def _shrink(state: dict, old: torch.Tensor, new: torch.Tensor, pos: torch.Tensor | None) -> dict:
    """Per-element state tensors of ``old`` restricted to the elements ``new`` kept."""
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.shape == old.shape:
            # Without positions (an unusual dtype) the state restarts from zero for this parameter.
            out[k] = v.reshape(-1)[pos].view(new.shape).clone() if pos is not None else torch.zeros_like(new)
        else:
            out[k] = v
    return out
