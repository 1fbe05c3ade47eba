"""Linear filter ensembles (Sándor, Pável & Csató, "Pruning CNN's with linear filter ensembles",
ECAI 2020, arXiv 2001.08142).

Sample M random masks over the channels (each kept with probability p), measure the loss
of the masked network on fixed batches for each, and fit the additive model

    loss(m) ≈ b + Σ_i w_i · m_i        (ridge least squares over the M samples).

w_i is what keeping channel i adds to the loss; an important channel lowers it, so the
importance is −w_i (higher = keep). A channel whose output nothing uses leaves every
loss unchanged and gets w_i ≈ 0: it ranks below every channel that helps.

Choices where the paper is silent:

* One fit per group: a sample masks only that group's channels (the rest of the network
  intact). Masking every group jointly puts the network far from where an additive model
  holds: on ResNet-20 with p = 0.9 jointly, a sample's loss is ~5× the unmasked loss, and
  even at p = 0.98 with 512 samples the fitted ranks barely correlate (ρ ≈ 0.1) with the
  loss increase of removing each channel alone, where per-group fits with 3 × channels
  samples reach ρ ≈ 0.35 to 0.5 (better than Fisher's on the same batch). Every fit
  predicts the same quantity (the loss, on the same batches), so the scores still compare
  across groups (``comparable = True``). Masks act at the consumers' inputs, which is
  exactly removal (:mod:`deploykit.importance.masks`); layers that run before a group's
  consumers are replayed from one unmasked pass, not recomputed per sample.
* Defaults: p = 0.9; M = 2 × the group's channels (at least 16) samples per group; the
  first calibration batch as the fixed batch; ridge λ = 1e-3 × the mean squared centred
  mask value × M (scale-free). The mask generator is seeded, so scores are reproducible;
  each sample's loss is summed over processes.
"""

from __future__ import annotations

import zlib

import torch

from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Batch, Importance, ScoringContext
from deploykit.importance.masks import PrefixReplay, SiteMasks


def ridge_fit(masks: torch.Tensor, losses: torch.Tensor, ridge: float) -> torch.Tensor:
    """w of ``losses ≈ b + masks @ w`` by ridge least squares (the intercept unpenalized)."""
    x = masks.double() - masks.double().mean(0)
    y = losses.double() - losses.double().mean()
    n = x.shape[1]
    lam = ridge * float(x.pow(2).sum()) / max(n, 1)
    a = x.T @ x + lam * torch.eye(n, dtype=torch.float64)
    return torch.linalg.solve(a, x.T @ y)


class LinearEnsemble(Importance):
    """Importance −w_i from a ridge fit of the masked-network loss on random channel masks, per group.

    Args:
        samples: M per group; None: 2 × the group's channels (at least 16).
        keep_prob: p, the probability that a channel is kept in a sample.
        batches: how many calibration batches form the fixed loss batches.
        ridge: relative ridge strength.
        seed: seed of the mask generator.
    """

    requires_data = True
    comparable = True

    def __init__(self, samples: int | None = None, keep_prob: float = 0.9, batches: int = 1, ridge: float = 1e-3,
                 seed: int = 0) -> None:
        self.samples, self.keep_prob, self.batches, self.ridge, self.seed = samples, keep_prob, batches, ridge, seed
        self.reset()

    def reset(self) -> None:
        self._batches: list[Batch] = []
        self._sites: SiteMasks | None = None
        self._replay: PrefixReplay | None = None

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        if len(self._batches) < self.batches:
            self._batches.append(batch)
            self._replay = None

    def fit(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        """Sample, measure and fit one group: −w per channel."""
        if self._sites is None:
            self._sites = SiteMasks(ctx.graph)
        if self._replay is None:  # what runs before the group's consumers is computed once, not per sample
            self._replay = PrefixReplay(ctx.model, self._batches)
        consumers = self._sites.consumers([group.id])
        c = group.channels
        m = self.samples or max(16, 2 * c)
        # A per-group stream (seeded by the group's name) keeps every group's draws independent of the others'.
        gen = torch.Generator().manual_seed(self.seed + zlib.crc32(group.id.encode()))
        draws = (torch.rand(m, c, generator=gen) < self.keep_prob).float()
        losses = torch.zeros(m, dtype=torch.float64)
        n_local = sum(int(x.shape[0]) for x, _ in self._batches)
        for s in range(m):
            with self._sites.applied({group.id: draws[s]}):
                losses[s] = self._replay.mean_loss(consumers, ctx.loss_fn) * n_local
        n = ctx.all_reduce(torch.tensor([float(n_local)], dtype=torch.float64))
        losses = ctx.all_reduce(losses) / n.clamp_min(1)
        return -ridge_fit(draws, losses, self.ridge)

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        return self.fit(group, ctx)


CRITERIA.register("ensemble", LinearEnsemble)
