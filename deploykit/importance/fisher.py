"""Group Fisher importance (Liu et al., ICML 2021, "Group Fisher Pruning for Practical Network Compression").

Every channel c carries a virtual mask m_c = 1 multiplied into the input of each
layer that consumes it. For sample n, g_nc = ∂L_n/∂m_c = Σ_hw A_nchw · ∂L_n/∂A_nchw.
The g of all consumers of a coupled group, and of every call of a layer used
several times, are summed per sample *before* squaring; Δ_c = ½ Σ_n g_nc².
Setting m_c = 0 at every site is exactly the removal of channel c, so Δ_c is the
second-order (Fisher) estimate of the loss increase from removing it.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from deploykit.graph.groups import Group, ModelGraph
from deploykit.importance.base import CRITERIA, Batch, Importance, ScoringContext

_Site = tuple[str, torch.Tensor, torch.Tensor]  # group id, positions in the layer input, group channel


def mask_sites(graph: ModelGraph) -> dict[nn.Module, list[_Site]]:
    """For each consuming layer, which of its input positions carry which group channel."""
    sites: dict[nn.Module, list[_Site]] = defaultdict(list)
    for g in graph.prunable():
        for it in graph._items(graph.tp_group(g)):
            mod = it.module
            depthwise = isinstance(mod, nn.modules.conv._ConvNd) and mod.groups > 1 and mod.groups == mod.in_channels
            consumer = not it.out and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear))
            if consumer or depthwise:
                sites[mod].append((g.id, torch.tensor(it.idxs), torch.tensor(it.root_idxs)))
    return dict(sites)


def _mask_shape(mod: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    if isinstance(mod, nn.Linear):  # features on the last dim
        return (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)


def per_sample_group_grads(ctx: ScoringContext, batch: Batch, sites: dict[nn.Module, list[_Site]]) -> dict[str, torch.Tensor]:
    """g_nc for every prunable group: ``{group id: Tensor[N, channels]}``."""
    x, y = batch
    masks: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)

    def pre_hook(mod: nn.Module, args: tuple) -> tuple:
        inp = args[0]
        m = torch.ones(_mask_shape(mod, inp), dtype=inp.dtype, device=inp.device, requires_grad=True)
        masks[mod].append(m)
        return (inp * m, *args[1:])

    model = ctx.model
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handles = [mod.register_forward_pre_hook(pre_hook) for mod in sites]
    try:
        model.eval()
        for p, _ in flags:  # only the masks need gradients
            p.requires_grad_(False)
        loss = ctx.loss_fn(model(x), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)

    n = x.shape[0]
    channels = {g.id: g.channels for g in ctx.graph.prunable()}
    out = {gid: torch.zeros(n, c, dtype=torch.float64) for gid, c in channels.items()}
    for mod, mod_sites in sites.items():
        for m in masks.get(mod, []):
            grad = m.grad.reshape(n, -1).double()  # one call of the layer: [N, input channels]
            for gid, idxs, root in mod_sites:
                out[gid].index_add_(1, root, grad[:, idxs])
    return out


class GroupFisher(Importance):
    """Δ_c = ½ Σ_n (Σ_sites g_nc)², accumulated over calibration batches."""

    requires_data = True
    default_normalize = "memory"
    comparable = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._sites: dict[nn.Module, list[_Site]] | None = None
        self._sites_key: tuple | None = None

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        key = tuple(g.channels for g in ctx.graph.groups)
        if self._sites is None or key != self._sites_key:  # index maps change when channels go
            self._sites, self._sites_key = mask_sites(ctx.graph), key
        for gid, g in per_sample_group_grads(ctx, batch, self._sites).items():
            delta = 0.5 * g.pow(2).sum(0)
            if gid in self._acc and self._acc[gid].numel() == delta.numel():
                self._acc[gid] += delta
            else:
                self._acc[gid] = delta

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        acc = self._acc.get(group.id)
        if acc is None or acc.numel() != group.channels:
            acc = torch.zeros(group.channels, dtype=torch.float64)
        return ctx.all_reduce(acc.clone())


CRITERIA.register("fisher", GroupFisher)
