"""GA channel selection with layer sensitivity (Hu, Sun, Li, Wang & Gu, "A novel channel pruning
method for deep neural network compression", arXiv 1805.11394).

1. Sensitivity: every group is pruned alone at a few ratios and the loss measured; the
   curves and the cost targets decide how many channels each group loses
   (:mod:`deploykit.select.sensitivity`).
2. Layer by layer (groups in graph order, earlier choices kept in place as masks), a
   genetic algorithm searches the subsets of the allocated size
   (:mod:`deploykit.select.genetic`) with the paper's two-step approximate fitness:
   first the cheap one, the relative reconstruction error of the consumers' outputs on
   sampled feature maps (a quadratic form in the contribution Gram,
   :mod:`deploykit.importance.features`), for every individual of every generation; then
   the expensive one, the network's loss on calibration batches, for the few best
   distinct individuals the GA found. The one with the lowest loss is kept.
3. Fine-tuning with knowledge distillation (``--kd``, as in the paper).

Choices where the paper is silent: probe order for the sensitivity analysis = smallest
contribution energy ‖Z_c‖² first (the Gram's diagonal); probe ratios 0.25, 0.5, 0.75
(capped by ``--max-ratio``); the GA's first population holds that greedy order's subset
plus random subsets; 4 candidates reach the loss step; losses on the first 2 calibration
batches, feature maps from the first 2 (10 sampled positions per image). Grouped
convolutions' channel atoms are genes (a gene is removed whole).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from deploykit.errors import DeployKitError
from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Importance, ScoringContext
from deploykit.importance.features import group_grams
from deploykit.importance.magnitude import GroupNorm
from deploykit.importance.masks import PrefixReplay, SiteMasks
from deploykit.select.genetic import GAConfig, GAResult, genetic_subset
from deploykit.select.sensitivity import allocate, sensitivity_curves


def _atom_matrix(group: Group) -> torch.Tensor:
    """``[atoms, channels]`` membership of the group's current channels."""
    pos = {k: i for i, k in enumerate(group.kept)}
    atoms = group.atoms or [[k] for k in group.kept]
    a = torch.zeros(len(atoms), group.channels, dtype=torch.float64)
    for i, atom in enumerate(atoms):
        for k in atom:
            a[i, pos[k]] = 1.0
    return a


class GeneticSelection(Importance):
    """Sensitivity-allocated widths, GA-chosen channels (two-step fitness).

    Args:
        ratios: probe ratios of the sensitivity analysis.
        ga: GA settings; ``ga.hall`` candidates reach the loss step.
        loss_batches, feature_batches: calibration batches for losses and for feature maps.
        positions: sampled output positions per image.
    """

    requires_data = True
    comparable = True
    schedule = "search"

    def __init__(self, ratios: tuple[float, ...] = (0.25, 0.5, 0.75), ga: GAConfig = GAConfig(), loss_batches: int = 2,
                 feature_batches: int = 2, positions: int = 10) -> None:
        self.ratios, self.ga, self.loss_batches, self.feature_batches, self.positions = (
            ratios, ga, loss_batches, feature_batches, positions)
        self.results: dict[str, GAResult] = {}
        self.allocation: dict[str, int] = {}
        self._fallback = GroupNorm(1)

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        """Only used if a schedule needs more chunks after the search: group L1 norms."""
        return self._fallback.score(group, ctx)

    def select(self, job) -> dict[str, list[int]]:  # noqa: ANN001  (a deploykit.train.job.Job)
        """Original channel indices to remove per group."""
        if job.calibration is None:
            raise DeployKitError("criterion ga needs calibration data: pass --data SPEC")
        calib = list(job.calibration())
        losses, feats = calib[: self.loss_batches], calib[: self.feature_batches]
        graph, loss_fn = job.graph, job.scoring.loss_fn
        groups = graph.prunable()
        masks = SiteMasks(graph)
        # No collectives here: each process searches on its own batches and the schedule broadcasts rank 0's choice.
        grams = group_grams(graph, feats, positions=self.positions)
        probe = {g.id: torch.argsort(grams[g.id].gram.diagonal()) for g in groups}
        ratios = [r for r in self.ratios if r <= job.select.max_ratio] or [job.select.max_ratio]
        replay = PrefixReplay(graph.model, losses)  # layers before the masked ones are replayed, not recomputed
        curves = sensitivity_curves(graph, losses, probe, ratios, loss_fn, masks, replay)
        self.allocation = allocate(job.cost_model, curves, probe, job.select)
        fixed: dict[str, torch.Tensor] = {}
        removal: dict[str, list[int]] = {}
        for g in groups:  # layer by layer, earlier choices in place
            n_remove = self.allocation.get(g.id, 0)
            if n_remove == 0:
                continue
            keep_mask = self._select_group(g, n_remove, graph, feats, replay, loss_fn, masks, fixed, job)
            fixed[g.id] = keep_mask
            removal[g.id] = [k for k, m in zip(g.kept, keep_mask.tolist()) if m == 0]
        return removal

    def _select_group(self, g: Group, n_remove: int, graph, feats, replay: PrefixReplay, loss_fn, masks: SiteMasks,
                      fixed: dict[str, torch.Tensor], job) -> torch.Tensor:  # noqa: ANN001
        a = _atom_matrix(g)  # genes are atoms
        sizes = a.sum(1)
        per = int(sizes.max())
        keep_atoms = a.shape[0] - n_remove // per
        gram = group_grams(graph, feats, [g.id], positions=self.positions, masks=masks, current=fixed)[g.id]
        gene_gram = a @ gram.gram @ a.T

        def step1(rows: torch.Tensor) -> torch.Tensor:  # the cheap fitness: −relative reconstruction error
            drop = 1.0 - rows.double()
            return -torch.einsum("pi,ij,pj->p", drop, gene_gram, drop)

        greedy = torch.zeros(a.shape[0])
        greedy[torch.argsort(gene_gram.diagonal(), descending=True)[:keep_atoms]] = 1.0
        cfg = replace(self.ga, seed=self.ga.seed + len(self.results))
        res = genetic_subset(a.shape[0], keep_atoms, step1, cfg, seeds=[greedy])
        best, best_loss = None, None
        consumers = masks.consumers([*fixed, g.id])
        for _, genes in res.hall:  # the expensive fitness: the network's loss, for the best few
            keep = (genes.double() @ a).clamp(max=1.0).float()
            with masks.applied({**fixed, g.id: keep}):
                loss = replay.mean_loss(consumers, loss_fn)
            if best_loss is None or loss < best_loss:
                best, best_loss = keep, loss
        self.results[g.id] = res
        return best


CRITERIA.register("ga", GeneticSelection)
