"""Sampled feature maps and per-channel contributions to the consumers' outputs.

A consumer layer L computes Y = Σ_i Z_i (+ bias), where Z_i is what input channel i
contributes (for a convolution, input channel i's slice of the unfolded input times
the matching slice of the weight). For a group, Z_c sums the slices of every input
position that carries group channel c. Removing the set R of a group's channels
changes L's output by Σ_{c∈R} Z_c, so with the Gram matrix G_cc' = ⟨Z_c, Z_c'⟩ the
squared error of *any* removal is the quadratic form 1_Rᵀ G 1_R: LASSO (He et al.
2017) and the GA's first fitness step (Hu et al. 2018) both work on G alone.

Choices: output positions are sampled at random, ``positions`` per image (He et al.
sample 10 per image); only dense convolutions (``groups == 1``) and linear layers are
consumers here (grouped/depthwise convs and parameter-free re-mappings have no
contributions to reconstruct); each consumer's Gram is divided by its total output
energy ‖Y‖², so every consumer counts by its relative error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.groups import ModelGraph
from deploykit.importance.masks import Batch, SiteMasks, device_of


def weighted_consumer(mod: nn.Module) -> bool:
    """Whether a consumer's output is a sum of per-input-channel contributions we can compute."""
    if isinstance(mod, nn.Linear):
        return True
    return isinstance(mod, nn.Conv2d) and mod.groups == 1


def sample_rows(mod: nn.Module, x: torch.Tensor, positions: int, gen: torch.Generator) -> torch.Tensor:
    """Rows of the layer's input that produce sampled output positions: ``[R, in_channels, K]``.

    For a conv, K is the kernel size and each row is one sampled output position's
    receptive field; for a linear layer, K = 1 and rows are samples (and leading dims).
    """
    if isinstance(mod, nn.Linear):
        return x.reshape(-1, x.shape[-1], 1)
    cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
    n, ck, p = cols.shape
    k = ck // mod.in_channels
    take = min(positions, p)
    idx = torch.stack([torch.randperm(p, generator=gen)[:take] for _ in range(n)]).to(cols.device)
    rows = cols.gather(2, idx.unsqueeze(1).expand(n, ck, take))  # [N, C*K, take]
    return rows.permute(0, 2, 1).reshape(n * take, mod.in_channels, k)


def layer_weight(mod: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in, K]``."""
    w = mod.weight.detach()
    return w.reshape(w.shape[0], w.shape[1], -1)


def contributions(mod: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Z_i for every input channel i: ``[in, R, out]``."""
    return torch.einsum("rik,oik->iro", rows.double(), layer_weight(mod).double())


@dataclass
class GroupGram:
    """The group's channel contributions, summed over its consumers.

    Attributes:
        gram: Σ_L G_L / ‖Y_L‖² (``[channels, channels]``, float64).
        layers: names of the consumers that contributed.
    """

    gram: torch.Tensor
    layers: list[str]

    def removal_error(self, keep: torch.Tensor) -> torch.Tensor:
        """Relative squared output error of keeping ``keep`` (``[..., channels]`` 0/1 rows)."""
        drop = 1.0 - keep.double()
        return torch.einsum("...i,ij,...j->...", drop, self.gram, drop)


def group_grams(
    graph: ModelGraph,
    batches: Sequence[Batch],
    gids: Sequence[str] | None = None,
    positions: int = 10,
    seed: int = 0,
    masks: SiteMasks | None = None,
    current: dict[str, torch.Tensor] | None = None,
    all_reduce=lambda t: t,
) -> dict[str, GroupGram]:
    """Contribution Grams of the groups ``gids`` (all prunable groups by default).

    Args:
        batches: calibration batches whose feature maps are sampled.
        masks, current: when given, the inputs are captured with these channel masks applied
            (earlier removals of a layer-by-layer method).
        all_reduce: sums the Grams over processes.
    """
    model = graph.model
    gids = list(gids) if gids is not None else [g.id for g in graph.prunable()]
    wanted = set(gids)
    names = {m: n for n, m in model.named_modules()}
    sites = {mod: [(gid, torch.tensor(i), torch.tensor(r)) for gid, i, r in entries if gid in wanted]
             for mod, entries in graph.input_sites().items() if weighted_consumer(mod)}
    sites = {m: e for m, e in sites.items() if e}
    channels = {g.id: g.channels for g in graph.prunable()}
    gen = torch.Generator().manual_seed(seed)
    grams = {gid: torch.zeros(channels[gid], channels[gid], dtype=torch.float64) for gid in gids}
    layer_names: dict[str, list[str]] = {gid: [] for gid in gids}
    captured: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in sites}

    def hook(mod: nn.Module, args: tuple) -> None:
        captured[mod].append(sample_rows(mod, args[0].detach(), positions, gen))

    was = model.training
    model.eval()
    dev = device_of(model)
    applied = masks.applied(current) if masks is not None and current else contextlib.nullcontext()
    try:
        # Registered after the masks' hooks, the capture sees what the layer really receives.
        with torch.no_grad(), applied:
            handles = [m.register_forward_pre_hook(hook) for m in sites]
            try:
                for x, _ in batches:
                    model(x.to(dev))
            finally:
                for h in handles:
                    h.remove()
    finally:
        model.train(was)
    for mod, entries in sites.items():
        rows = torch.cat(captured[mod])
        z = contributions(mod, rows)  # [in, R, out]
        y_energy = z.sum(0).pow(2).sum()
        for gid, idxs, root in entries:
            zc = torch.zeros(channels[gid], *z.shape[1:], dtype=z.dtype, device=z.device)
            zc.index_add_(0, root.to(z.device), z[idxs.to(z.device)])
            flat = zc.reshape(channels[gid], -1)
            grams[gid] += (flat @ flat.T).cpu() / all_reduce(y_energy.clone()).clamp_min(1e-30).cpu()
            layer_names[gid].append(names.get(mod, type(mod).__name__))
    return {gid: GroupGram(all_reduce(grams[gid]), layer_names[gid]) for gid in gids}

