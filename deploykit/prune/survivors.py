"""Which weight rows and columns of every layer survive a removal, in the layer's own numbering.

Physical removal index-selects parameters along whatever dims the dependency graph
decides (output rows, input columns, through concatenations and channel re-mappings).
To learn, per layer, which of its current output rows and input columns remain, we
write into a float64 copy of the model a marker per weight entry (row × in + column),
apply the same removal to the copy, and read the markers back. The model itself is
never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deploykit.graph.groups import ModelGraph


@dataclass(frozen=True)
class Survivors:
    """A layer's surviving output rows and input columns (positions before the removal)."""

    out: list[int]
    inp: list[int]


def _weighted(mod: nn.Module) -> bool:
    return isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(mod, "weight", None) is not None


@torch.no_grad()
def surviving(
    model: nn.Module, example_input: torch.Tensor, removal: Mapping[str, Sequence[int]], ignore: Sequence[str] = ()
) -> dict[str, Survivors]:
    """Per layer name, the rows and columns that survive removing ``removal``.

    Args:
        model: the model as it is now (not modified).
        removal: ``{group id: positions}`` in the model's *current* numbering of each group.
        ignore: module paths the graph must leave alone (as the caller's graph did).
    """
    twin = copy.deepcopy(model).cpu().double()
    graph = ModelGraph(twin, example_input.detach().cpu().double(), ignore=ignore)
    before: dict[str, tuple[int, int]] = {}
    for name, mod in twin.named_modules():
        if not _weighted(mod):
            continue
        w = mod.weight
        rows, cols = w.shape[0], w.shape[1]
        marker = (torch.arange(rows, dtype=torch.float64).view(-1, 1) * cols
                  + torch.arange(cols, dtype=torch.float64).view(1, -1))
        w.data = marker.view(rows, cols, *([1] * (w.ndim - 2))).expand_as(w).clone()
        before[name] = (rows, cols)
    for gid, pos in removal.items():
        if pos:
            graph.remove(gid, list(pos))
    out: dict[str, Survivors] = {}
    for name, mod in twin.named_modules():
        if name not in before:
            continue
        _, cols = before[name]
        m = mod.weight.data.reshape(mod.weight.shape[0], mod.weight.shape[1], -1)[:, :, 0].long()
        out[name] = Survivors(out=(m[:, 0] // cols).tolist() if m.shape[1] else [],
                              inp=(m[0, :] % cols).tolist() if m.shape[0] else [])
    return out
