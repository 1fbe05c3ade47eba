"""Operator-norm passive filter pruning (Singh & Plumbley, "Efficient CNNs via Passive Filter
Pruning", arXiv 2304.02319; reference code: Arshdeep-Singh-Boparai/Efficient_CNNs_passive_filter_pruning).

Passive: weights only, no data. For a layer with n filters, take input channel c of every
filter: the n × K matrix A_c (K = kernel positions). Centre its rows on their mean μ_c and
find its dominant right singular vector v_c: the direction along which the layer's filters
act most strongly on that input channel (σ₁(A_c − μ_c) is the operator norm of the centred
matrix, attained at v_c). A filter's importance is its share of those operator norms: how
far its channel slices reach along v_c,

    s_i = Σ_c ⟨A_c[i] − μ_c, v_c⟩²,   and Σ_i ⟨A_c[i] − μ_c, v_c⟩² = σ₁(A_c − μ_c)².

So a filter whose energy lies along the layer's dominant directions ranks above a filter
with the same entry-wise norm spread in directions the operator barely uses.

Choices where the paper is silent or we differ:

* The reference sums the projections over channels and *then* squares, with each v_c's sign
  fixed by the first filter, which makes a filter's score depend on the order of the
  filters. We square each projection before summing (sign-free, permutation-equivariant,
  and exactly each filter's contribution to Σ_c σ₁²).
* The reference divides a layer's scores by their maximum; we do the same, then sum over
  the layers of a coupled group whose output channels the group shares (every conv or
  linear writing into a residual stream), so each member layer counts equally.
* Linear layers are treated as convolutions with a 1 × 1 kernel (K = 1: A_c is a column and
  v_c = ±1, so the score is the squared deviation from the layer's mean weight per input).
* Grouped convolutions: channels are the within-group inputs of each filter, as stored.
"""

from __future__ import annotations

import torch
from torch import nn

from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Importance, ScoringContext


def filter_scores(weight: torch.Tensor) -> torch.Tensor:
    """Operator-norm importance of each output filter of a ``[out, in, *kernel]`` weight."""
    w = weight.detach().double()
    w = w.reshape(w.shape[0], w.shape[1], -1)  # [n, C, K]
    a = w.permute(1, 0, 2)  # [C, n, K]: A_c, one row per filter
    centred = a - a.mean(1, keepdim=True)
    # Dominant right singular vector per channel, batched over channels.
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[:, 0, :]  # [C, K]
    proj = torch.einsum("cnk,ck->cn", centred, v)  # [C, n]
    return proj.pow(2).sum(0)


class OperatorNorm(Importance):
    """Passive operator-norm filter importance, summed over the group's producing layers."""

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        total = torch.zeros(group.channels, dtype=torch.float64)
        for it in ctx.graph.tp_items(group):
            mod = it.module
            if not it.out or not isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) or mod.weight is None:
                continue
            w = mod.weight
            if isinstance(mod, nn.modules.conv._ConvNd) and mod.transposed:
                w = w.transpose(0, 1)
            s = filter_scores(w).cpu()
            s = s / s.max().clamp_min(1e-30)
            total.index_add_(0, torch.tensor(it.root_idxs), s[it.idxs])
        return total


CRITERIA.register("operator_norm", OperatorNorm)
