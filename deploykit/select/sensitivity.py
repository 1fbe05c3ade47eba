"""Per-group pruning ratios from a sensitivity analysis (Hu et al. 2018, after Li et al. 2017).

Prune one group at a time at a few ratios (its channels removed in a cheap probe order,
the rest of the network intact) and measure the loss on calibration batches: ΔL_g(r).
Hu et al. then give sensitive layers small ratios and insensitive ones large ratios; the
exact rule is not published. Here the curves decide it together with the cost targets:
the k-th channel of group g (in probe order) is worth the marginal loss increase
ΔL_g(k/n) − ΔL_g((k−1)/n) (linear between measured ratios, made non-decreasing so that a
group's later channels never look cheaper than its earlier ones), and global ranking
removes the cheapest marginals until the targets are met. What comes out is only *how
many* channels each group loses; which ones is the GA's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance.masks import Batch, PrefixReplay, SiteMasks, mean_loss
from deploykit.select.global_rank import SelectConfig, select_global


def sensitivity_curves(
    graph: ModelGraph,
    batches: Sequence[Batch],
    probe_order: dict[str, torch.Tensor],
    ratios: Sequence[float],
    loss_fn: Callable | None = None,
    masks: SiteMasks | None = None,
    replay: PrefixReplay | None = None,
) -> dict[str, list[tuple[float, float]]]:
    """``{group id: [(ratio, loss increase)]}`` for every group in ``probe_order``.

    Args:
        probe_order: per group, current channel positions in the order they are removed.
        replay: a :class:`PrefixReplay` of ``batches`` (made here when not given).
    """
    masks = masks or SiteMasks(graph)
    replay = replay or PrefixReplay(graph.model, batches)
    base = mean_loss(graph.model, batches, loss_fn)
    curves = {}
    for gid, order in probe_order.items():
        n = len(order)
        points = []
        for r in ratios:
            k = min(n - 1, round(r * n))
            keep = torch.ones(n)
            keep[order[:k]] = 0.0
            with masks.applied({gid: keep}):
                points.append((k / n, replay.mean_loss(masks.consumers([gid]), loss_fn) - base))
        curves[gid] = points
    return curves


def marginal_scores(n: int, points: Sequence[tuple[float, float]]) -> torch.Tensor:
    """The marginal loss of removing the 1st, 2nd, ... channel (in probe order) of an n-channel group."""
    xs = [0.0] + [p[0] for p in points]
    ys = [0.0] + [p[1] for p in points]
    knots = sorted(set(zip(xs, ys)))
    xs, ys = [k[0] for k in knots], [k[1] for k in knots]

    def at(f: float) -> float:
        for i in range(1, len(xs)):
            if f <= xs[i] or i == len(xs) - 1:
                x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
                return y0 + (y1 - y0) * (f - x0) / max(x1 - x0, 1e-12)  # extrapolates past the last ratio
        return ys[-1]

    m = torch.tensor([at(k / n) - at((k - 1) / n) for k in range(1, n + 1)], dtype=torch.float64)
    return torch.cummax(m, 0).values


def allocate(cost_model: CostModel, curves: dict[str, list[tuple[float, float]]], probe_order: dict[str, torch.Tensor],
             cfg: SelectConfig) -> dict[str, int]:
    """How many channels each group loses so that the targets are met where the curves say it costs least."""
    scores = {}
    for gid, order in probe_order.items():
        n = len(order)
        s = torch.empty(n, dtype=torch.float64)
        s[order] = marginal_scores(n, curves[gid])
        scores[gid] = s
    sel = select_global(cost_model, scores, cfg, comparable=True)
    if not sel.met:
        raise DeployKitError("the sensitivity allocation cannot meet the targets; raise them or --max-ratio")
    return {gid: len(idxs) for gid, idxs in sel.remove.items()}
