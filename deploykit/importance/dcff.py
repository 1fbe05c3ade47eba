"""Dynamic-coded filter fusion (DCFF): the proxies and the KL criterion (Lin et al., "Training
Compact CNNs for Image Classification using Dynamic-coded Filter Fusion"; reference code
lmbxmu/DCFF). The training schedule that fuses filters is :mod:`deploykit.train.dcff`.

Every filter i of a layer gets an inter-similarity distribution over the layer's filters,

    p_i(j) = softmax_j(−t · ‖w_i − w_j‖ / D̄),

its *proxy*; as the temperature t grows the proxy becomes one-hot on i itself. A filter
is important when its proxy differs from the others': s_i = Σ_j KL(p_i ‖ p_j). The
kept filters are *fused*: kept slot k computes Σ_j p_k(j) w_j instead of w_k, so the
filters that go still shape the ones that stay, until t → ∞ leaves w_k alone.

Choices where we depart from or add to the reference:

* The paper multiplies distances by t and lets t → ∞; the reference divides by a t that
  falls to 0 over the epochs. We use the paper's form and divide distances by D̄, the
  layer's mean distance between distinct filters, so one temperature fits every layer
  and every scale of weights.
* The reference trains from scratch, where fusing nearly uniformly at first is harmless.
  deploykit starts from a trained model, so the default schedule starts at t = 5 (a kept
  filter keeps most of its own weight) and grows geometrically to t = 100 (one-hot to
  machine precision) over the fine-tuning budget.
* In a coupled group the KL scores of its producing layers (each normalized by its
  maximum) are summed; each producer fuses with its own proxies over the same kept slots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Importance, ScoringContext


def proxies(weight: torch.Tensor, t: float) -> torch.Tensor:
    """The proxies p_i of a ``[n, ...]`` filter bank: ``[n, n]``, each row a distribution."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
    d = torch.cdist(w, w)
    n = d.shape[0]
    mean = d.sum() / max(n * (n - 1), 1)
    return torch.softmax(-t * d / mean.clamp_min(1e-30), dim=1)


def kl_scores(p: torch.Tensor) -> torch.Tensor:
    """s_i = Σ_j KL(p_i ‖ p_j) for proxies ``p`` (rows)."""
    logp = p.clamp_min(1e-300).log()
    # KL(p_i‖p_j) = Σ_k p_i(k) (log p_i(k) − log p_j(k))
    kl = (p * logp).sum(1, keepdim=True) - p @ logp.T
    return kl.sum(1)


def fuse(bank: torch.Tensor, proxy_rows: torch.Tensor) -> torch.Tensor:
    """Fused filters: row k is Σ_j proxy_rows[k, j] · bank[j]."""
    flat = bank.reshape(bank.shape[0], -1)
    return (proxy_rows.to(flat.dtype) @ flat).reshape(proxy_rows.shape[0], *bank.shape[1:])


def producers(group: Group, ctx: ScoringContext) -> list[tuple[nn.Module, list[int], list[int]]]:
    """The group's weighted layers that write its channels: ``(layer, positions, group channels)``."""
    out = []
    for it in ctx.graph.tp_items(group):
        mod = it.module
        if it.out and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(mod, "weight", None) is not None:
            out.append((mod, list(it.idxs), list(it.root_idxs)))
    return out


class DCFFImportance(Importance):
    """The KL criterion at temperature ``t_start``, plus the fusion schedule's settings.

    Args:
        t_start, t_end: temperature at the first and the last fine-tuning iteration
            (geometric in between); without fine-tuning, channels are chosen at ``t_end``.
        updates: how many times over the budget the proxies are recomputed from the
            current weights (the reference: once per epoch).
        reselect: at each update also re-choose the kept filters by their current KL
            scores (the reference does). Off by default: deploykit starts from a trained
            model, and a slot that switches filter invalidates the BatchNorm statistics and
            the consumers' weights learned for it (the reference trains from scratch for
            hundreds of epochs, where that washes out).
    """

    comparable = False
    schedule = "dcff"

    def __init__(self, t_start: float = 5.0, t_end: float = 100.0, updates: int = 20, reselect: bool = False) -> None:
        if not (0 < t_start <= t_end):
            raise DeployKitError(f"dcff temperatures must satisfy 0 < t_start <= t_end (got {t_start}, {t_end})")
        self.t_start, self.t_end, self.updates, self.reselect = t_start, t_end, max(1, updates), reselect
        self.t = t_start
        self.fusion = None  # set by the dcff schedule while it trains

    @contextlib.contextmanager
    def observe(self, ctx: ScoringContext, scale: float) -> Iterator[None]:
        """Around a training step: the fused filters are recomputed before it, the banks get its gradients."""
        if self.fusion is None:
            yield
            return
        with self.fusion.step():
            yield

    def temperature(self, iteration: int, total: int) -> float:
        """t at ``iteration`` of a ``total``-iteration budget (``t_end`` when there is no budget)."""
        if total <= 0:
            return self.t_end
        frac = min(max(iteration / total, 0.0), 1.0)
        return self.t_start * (self.t_end / self.t_start) ** frac

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        total = torch.zeros(group.channels, dtype=torch.float64)
        for mod, idxs, roots in producers(group, ctx):
            s = kl_scores(proxies(mod.weight, self.t)).cpu()
            s = s / s.max().clamp_min(1e-30)
            total.index_add_(0, torch.tensor(roots), s[idxs])
        return total


CRITERIA.register("dcff", DCFFImportance)
