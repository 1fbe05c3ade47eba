"""LASSO channel selection (He, Zhang & Sun, "Channel Pruning for Accelerating Very Deep Neural
Networks", ICCV 2017; reference code yihui-he/channel-pruning).

For a group, sample feature maps at its consumers and write each consumer's output as the
sum of per-channel contributions Z_c (:mod:`deploykit.importance.features`). He et al.
select channels with

    min_β ‖Y − Σ_c β_c Z_c‖² + λ ‖β‖₁,     Y = Σ_c Z_c (the unpruned output),

raising λ until only the wanted number of β_c is non-zero, then reconstruct the consumer's
weights by least squares (``--recover reconstruct``, on by default for this criterion).
In Gram form the objective is (1 − β)ᵀ G (1 − β) + λ‖β‖₁, solved here by coordinate descent
along a decreasing λ path (warm starts). Global ranking decides how many channels a group
keeps, so instead of one λ per wanted count the criterion returns the *order* in which the
path admits channels: a channel's score is the position on the path from which it stays
non-zero (larger λ = earlier = more important), ties broken by |β_c| there. Keeping the
top k of that order is the LASSO selection at the λ where k channels are active, whenever
the path is monotone (the usual case; He et al.'s bisection on λ makes the same choice).

Choices: 10 sampled positions per image (as He et al.), the first 4 calibration batches,
a 40-step geometric λ grid from λ_max (all β = 0) down to 1e-4 λ_max, 200 coordinate sweeps
at most per step. No sign constraint on β (as in the paper). Scores are per-group path
positions, so they do not compare across groups (``comparable = False``).
"""

from __future__ import annotations

import numpy as np
import torch

from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Batch, Importance, ScoringContext
from deploykit.importance.features import group_grams


def lasso_gram(gram: torch.Tensor, lam: float, beta: torch.Tensor, sweeps: int = 200, tol: float = 1e-10) -> torch.Tensor:
    """Coordinate descent on (1 − β)ᵀ G (1 − β) + λ‖β‖₁ from the starting point ``beta``."""
    g = gram.double().numpy()
    diag = g.diagonal()
    target = g.sum(1)  # G·1: the correlation of each channel's contribution with Y
    b = beta.double().numpy().copy()
    gb = g @ b  # kept up to date as coordinates change
    scale = max(float(np.abs(diag).max()), 1e-300)
    for _ in range(sweeps):
        biggest = 0.0
        for c in range(len(b)):
            if diag[c] <= 0:  # the channel contributes nothing: its coefficient stays 0
                continue
            rho = target[c] - (gb[c] - diag[c] * b[c])
            new = np.sign(rho) * max(abs(rho) - lam / 2, 0.0) / diag[c]
            delta = new - b[c]
            if delta != 0.0:
                gb += g[:, c] * delta
                b[c] = new
                biggest = max(biggest, abs(delta) * diag[c] / scale)
        if biggest <= tol:
            break
    return torch.from_numpy(b)


def lasso_path_order(gram: torch.Tensor, steps: int = 40, floor: float = 1e-4) -> torch.Tensor:
    """Per-channel scores from the LASSO path: higher = admitted earlier (kept longer)."""
    g = gram.double()
    n = g.shape[0]
    lam_max = 2.0 * float(g.sum(1).abs().max())
    if lam_max <= 0:
        return torch.zeros(n, dtype=torch.float64)
    lams = torch.logspace(0, torch.log10(torch.tensor(floor)).item(), steps, dtype=torch.float64) * lam_max
    beta = torch.zeros(n, dtype=torch.float64)
    path = []
    for lam in lams:
        beta = lasso_gram(g, float(lam), beta)
        path.append(beta.clone())
    betas = torch.stack(path)  # [steps, n], λ decreasing
    nonzero = betas.abs() > 0
    # The first step from which a channel stays non-zero to the end of the path.
    stays = torch.flip(torch.cumprod(torch.flip(nonzero, [0]).int(), 0), [0]).bool()
    first = torch.where(stays.any(0), stays.int().argmax(0), torch.full((n,), steps))
    at_entry = betas[first.clamp(max=steps - 1), torch.arange(n)].abs()
    at_entry = torch.where(first < steps, at_entry, torch.zeros_like(at_entry))
    tie = at_entry / at_entry.max().clamp_min(1e-30)  # in [0, 1]
    return (steps - first).double() + 0.5 * tie


class Lasso(Importance):
    """LASSO path order of each group's channels on sampled consumer feature maps.

    Args:
        batches: calibration batches whose feature maps are sampled.
        positions: sampled output positions per image.
        steps: points on the λ path.
    """

    requires_data = True
    comparable = False
    default_recover = "reconstruct"

    def __init__(self, batches: int = 4, positions: int = 10, steps: int = 40, seed: int = 0) -> None:
        self.batches, self.positions, self.steps, self.seed = batches, positions, steps, seed
        self.reset()

    def reset(self) -> None:
        self._batches: list[Batch] = []
        self._scores: dict[str, torch.Tensor] | None = None

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        if len(self._batches) < self.batches:
            self._batches.append(batch)
        self._scores = None

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        if self._scores is None:
            grams = group_grams(ctx.graph, self._batches, positions=self.positions, seed=self.seed,
                                all_reduce=ctx.all_reduce)
            self._scores = {gid: lasso_path_order(gg.gram, self.steps) for gid, gg in grams.items()}
        return self._scores[group.id]


CRITERIA.register("lasso", Lasso)
