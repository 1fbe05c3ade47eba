"""Blending pruning criteria (He, Huang, Liang, Liang & Yang, "Blending Pruning Criteria for
Convolutional Neural Networks", ICANN 2021, arXiv 2107.05033).

1. Criteria clustering: every criterion of a pool scores every group; per group, the
   criteria whose channel rankings agree (Spearman ρ, average linkage, merged while
   ρ ≥ ``threshold``) form a cluster, and one representative per cluster stands for it
   (the member that agrees most with the rest of its cluster).
2. Importance calibration: a calibration weight α_k ∈ [0, 1] per pool criterion; in each
   group a representative's normalized ranks (0 = least important, 1 = most) are weighted
   by the summed α of its cluster's members, and the blend is their weighted mean.
3. An evolutionary algorithm searches α (:mod:`deploykit.select.evolution`); the fitness of
   α is the top-1 on held-out calibration batches of the model pruned to the cost targets
   by the blended scores (the job's own global ranking), after BatchNorm recalibration,
   with the loss there as the tie-break. The first population holds every criterion alone
   (α one-hot: in a group where it was clustered away, its representative stands in, by
   construction a ranking that agrees with it) and all criteria equally, and the best
   individual is always kept, so the result is never worse than the best single
   criterion of the pool by this fitness.

Choices where the paper is silent: the pool is l1, l2, fpgm, bn_scale, taylor, fisher and
operator_norm; ρ ≥ 0.9 merges; the calibration batches are split in two halves, the first
to score the data-driven criteria and recalibrate BatchNorm, the second held out for the
fitness (one batch is used for both); population 10, 6 generations, 2 elites, mutation
σ = 0.2. Candidates that prune the same channels share one evaluation. Pruned models are
evaluated under input masks (exactly the physically pruned model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deploykit.errors import DeployKitError
from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Importance, ScoringContext, score_groups
from deploykit.importance.magnitude import GroupNorm
from deploykit.importance.masks import SiteMasks, accuracy_and_loss, bn_recalibrated
from deploykit.select.evolution import EAConfig, EAResult, evolve
from deploykit.select.global_rank import select_global

POOL = ("l1", "l2", "fpgm", "bn_scale", "taylor", "fisher", "operator_norm")


def normalized_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks scaled to [0, 1]: 0 for the lowest score (ties broken by position)."""
    n = scores.numel()
    r = torch.empty(n, dtype=torch.float64)
    r[torch.argsort(scores.double(), stable=True)] = torch.arange(n, dtype=torch.float64)
    return r / max(n - 1, 1)


def spearman(ranks: torch.Tensor) -> torch.Tensor:
    """Spearman correlation between the rows of ``ranks`` (``[K, n]``)."""
    x = ranks - ranks.mean(1, keepdim=True)
    norm = x.norm(dim=1).clamp_min(1e-12)
    return (x @ x.T) / (norm[:, None] * norm[None, :])


@dataclass
class Clustering:
    """Per group: the cluster of every pool criterion and each cluster's representative."""

    cluster_of: list[int]  # pool index -> cluster id
    representative: list[int]  # cluster id -> pool index


def cluster_criteria(ranks: torch.Tensor, threshold: float) -> Clustering:
    """Average-linkage clustering of criteria by the Spearman correlation of their rankings."""
    corr = spearman(ranks)
    clusters = [[i] for i in range(ranks.shape[0])]
    while len(clusters) > 1:
        best, pair = None, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = float(corr[clusters[a]][:, clusters[b]].mean())
                if best is None or link > best:
                    best, pair = link, (a, b)
        if best is None or best < threshold:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    cluster_of = [0] * ranks.shape[0]
    reps = []
    for cid, members in enumerate(clusters):
        for m in members:
            cluster_of[m] = cid
        agreement = [float(corr[m, members].sum()) for m in members]  # the member closest to the rest
        reps.append(members[max(range(len(members)), key=lambda i: (agreement[i], -members[i]))])
    return Clustering(cluster_of, reps)


def blend(ranks: torch.Tensor, clustering: Clustering, alpha: torch.Tensor) -> torch.Tensor:
    """Blended scores of one group: representatives' ranks weighted by their clusters' summed α."""
    weights = torch.zeros(len(clustering.representative), dtype=torch.float64)
    for k, cid in enumerate(clustering.cluster_of):
        weights[cid] += float(alpha[k])
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    reps = ranks[clustering.representative]
    return (weights[:, None] * reps).sum(0) / weights.sum()


class BlendedCriteria(Importance):
    """Criteria clustering + evolutionary calibration of the blend, fitness = pruned accuracy.

    Args:
        pool: registered criterion names to blend.
        threshold: Spearman ρ at or above which clusters merge.
        ea: evolutionary search settings.
    """

    requires_data = True
    comparable = False
    schedule = "search"

    def __init__(self, pool: Sequence[str] = POOL, threshold: float = 0.9, ea: EAConfig = EAConfig()) -> None:
        self.pool, self.threshold, self.ea = list(pool), threshold, ea
        self.result: EAResult | None = None
        self.clusterings: dict[str, Clustering] = {}
        self.ranks: dict[str, torch.Tensor] = {}
        self._fallback = GroupNorm(1)

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        """Only used if a schedule needs more chunks after the search: group L1 norms."""
        return self._fallback.score(group, ctx)

    def pool_ranks(self, ctx: ScoringContext, batches: Sequence) -> dict[str, torch.Tensor]:
        """``{group id: [pool, channels]}`` normalized ranks of every pool criterion."""
        per = []
        for name in self.pool:
            crit = CRITERIA.get(name)()
            per.append(score_groups(crit, ctx, batches if crit.requires_data else None))
        return {g.id: torch.stack([normalized_ranks(s[g.id]) for s in per]) for g in ctx.graph.prunable()}

    def blended(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores of every group for calibration weights ``alpha``."""
        return {gid: blend(r, self.clusterings[gid], alpha) for gid, r in self.ranks.items()}

    def select(self, job) -> dict[str, list[int]]:  # noqa: ANN001  (a deploykit.train.job.Job)
        """Original channel indices to remove per group (the best blend's selection)."""
        if job.calibration is None:
            raise DeployKitError("criterion blend needs calibration data: pass --data SPEC")
        calib = list(job.calibration())
        half = max(1, len(calib) // 2)
        scoring, held_out = calib[:half], (calib[half:] or calib[:half])
        self.ranks = self.pool_ranks(job.scoring, scoring)
        self.clusterings = {gid: cluster_criteria(r, self.threshold) for gid, r in self.ranks.items()}
        masks = SiteMasks(job.graph)
        cache: dict[tuple, tuple[float, float]] = {}

        def fitness(alpha: torch.Tensor) -> tuple[float, float]:
            sel = select_global(job.cost_model, self.blended(alpha), job.select, comparable=self.comparable)
            key = tuple(sorted((gid, tuple(idxs)) for gid, idxs in sel.remove.items()))
            if key not in cache:
                with masks.applied(masks.keep_masks(sel.remove)), bn_recalibrated(job.model, scoring):
                    acc, loss = accuracy_and_loss(job.model, held_out)
                cache[key] = (acc, -loss)
            return cache[key]

        k = len(self.pool)
        seeds = [torch.eye(k, dtype=torch.float64)[i] for i in range(k)] + [torch.ones(k, dtype=torch.float64)]
        self.result = evolve(k, fitness, self.ea, seeds)
        best = select_global(job.cost_model, self.blended(self.result.best), job.select, comparable=self.comparable)
        return best.remove


CRITERIA.register("blend", BlendedCriteria)
