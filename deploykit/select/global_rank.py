"""Global ranking: remove the cheapest-to-lose channels until every target is met.

Each step takes, from the group where it is cheapest, the next chunk of its
lowest-scoring channels; the chunk's score is divided by what removing it saves
(``normalize``), recomputed after every removal because a layer's cost depends
on the widths of its neighbours. With ``round_to=K`` every group keeps a
multiple of K channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel, Costs
from deploykit.registry import Registry

NORMALIZERS: Registry[Callable[[dict[str, float]], float]] = Registry("normalization")
NORMALIZERS.register("memory", lambda s: s["memory"])
NORMALIZERS.register("flops", lambda s: s["macs"])
NORMALIZERS.register("params", lambda s: s["params"])
NORMALIZERS.register("none", lambda s: 1.0)


@dataclass(frozen=True)
class Target:
    """Stop once ``kind`` (macs, params, activation_bytes) ≤ ``ratio`` × the base's."""

    kind: str
    ratio: float

    def met(self, now: Costs, base: Costs) -> bool:
        """Whether the predicted costs meet this target."""
        return getattr(now, self.kind) <= self.ratio * getattr(base, self.kind)


@dataclass
class SelectConfig:
    """How to rank.

    Attributes:
        targets: all must be met.
        normalize: registered cost name the chunk score is divided by.
        round_to: keep every group's width a multiple of this.
        max_ratio: never remove more than this fraction of a group.
    """

    targets: list[Target]
    normalize: str = "memory"
    round_to: int = 1
    max_ratio: float = 0.9


@dataclass
class Selection:
    """Original channel indices to remove per group, and what could not be rounded."""

    remove: dict[str, list[int]] = field(default_factory=dict)
    predicted: Costs | None = None
    unrounded: dict[str, str] = field(default_factory=dict)
    met: bool = True


def _min_keep(channels: int, cfg: SelectConfig) -> int:
    keep = max(1, math.ceil((1 - cfg.max_ratio) * channels))
    k = cfg.round_to
    return max(k, math.ceil(keep / k) * k) if k > 1 else keep


def _step(width: int, min_keep: int, k: int) -> int:
    """Channels the next chunk removes (0 when the group is done)."""
    if k > 1 and width % k:
        step = width % k
    else:
        step = k
    return step if width - step >= min_keep else 0


def select_global(
    cost_model: CostModel, scores: dict[str, torch.Tensor], cfg: SelectConfig, comparable: bool = True
) -> Selection:
    """Pick channels to remove, globally, until ``cfg.targets`` are met.

    Args:
        cost_model: predicts costs from group widths.
        scores: per-group channel scores (higher = keep), for the groups that may shrink.
        comparable: whether raw scores compare across groups (otherwise each group's
            scores are divided by their mean first).
    """
    norm = NORMALIZERS.get(cfg.normalize)
    groups = cost_model.groups
    w = cost_model.widths()
    base = cost_model.base
    order: dict[int, list[int]] = {}
    sorted_scores: dict[int, torch.Tensor] = {}
    sel = Selection()
    min_keep: dict[int, int] = {}
    for gi, g in enumerate(groups):
        if g.id not in scores:
            continue
        s = scores[g.id].double()
        if not comparable:
            s = s / s.mean().clamp_min(1e-12)
        idx = torch.argsort(s, stable=True)
        order[gi] = idx.tolist()
        sorted_scores[gi] = s[idx]
        min_keep[gi] = _min_keep(g.channels, cfg)
        if cfg.round_to > 1 and g.channels < 2 * cfg.round_to:
            sel.unrounded[g.id] = f"{g.channels} channels: fewer than 2 × round-to {cfg.round_to}, kept whole"
    removed = {gi: 0 for gi in order}

    def priority(gi: int) -> float | None:
        k = _step(w[gi], min_keep[gi], cfg.round_to)
        if k == 0 or g_unrounded(gi):
            return None
        r = removed[gi]
        chunk = float(sorted_scores[gi][r : r + k].sum())
        cost = norm(cost_model.saving(gi, k, w))
        if cost <= 0:
            return None
        return chunk / cost if cfg.normalize != "none" else chunk / k

    def g_unrounded(gi: int) -> bool:
        return groups[gi].id in sel.unrounded

    prio = {gi: priority(gi) for gi in order}
    while not all(t.met(cost_model.predict(w), base) for t in cfg.targets):
        live = [(p, gi) for gi, p in prio.items() if p is not None]
        if not live:
            sel.met = False
            break
        _, gi = min(live)
        k = _step(w[gi], min_keep[gi], cfg.round_to)
        removed[gi] += k
        w[gi] -= k
        for nb in cost_model.neighbours[gi] | {gi}:
            if nb in prio:
                prio[nb] = priority(nb)
    for gi, r in removed.items():
        if r:
            kept = groups[gi].kept
            sel.remove[groups[gi].id] = sorted(kept[i] for i in order[gi][:r])
    sel.predicted = cost_model.predict(w)
    return sel


def check_ratio(name: str, value: float) -> float:
    """Validate a target ratio in (0, 1]."""
    if not (0 < value <= 1):
        raise DeployKitError(f"{name} {value} is outside (0, 1]; give a fraction of the original, e.g. 0.5")
    return value
