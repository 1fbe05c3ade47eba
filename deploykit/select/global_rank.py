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
from dataclasses import dataclass, field, replace

import torch

from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel, Costs
from deploykit.registry import Registry

NORMALIZERS: Registry[Callable[[dict[str, float]], float]] = Registry("normalization")
NORMALIZERS.register("memory", lambda s: s["memory"])
NORMALIZERS.register("flops", lambda s: s["macs"])
NORMALIZERS.register("params", lambda s: s["params"])
NORMALIZERS.register("none", lambda s: 1.0)


@NORMALIZERS.register("latency")
def _latency_saved(s: dict[str, float]) -> float:
    """Milliseconds saved, from the latency table attached to the cost model (``deploykit.bench``)."""
    if "latency" not in s:
        raise DeployKitError("--normalize latency needs a latency table: the cost model has none attached")
    return s["latency"]


@dataclass(frozen=True)
class Target:
    """Stop once ``kind`` (macs, params, activation_bytes) ≤ ``ratio`` × the base's."""

    kind: str
    ratio: float

    def met(self, now: Costs, base: Costs) -> bool:
        """Whether the predicted costs meet this target (a cost ``now`` does not know, e.g. latency
        in a forward-pass measurement, is left to the prediction)."""
        value = getattr(now, self.kind)
        return value is None or value <= self.ratio * getattr(base, self.kind)


@dataclass
class SelectConfig:
    """How to rank.

    Attributes:
        targets: all must be met.
        normalize: registered cost name the chunk score is divided by.
        round_to: keep every group's width a multiple of this.
        max_ratio: never remove more than this fraction of a group (of its width when the graph was traced).
        max_chunks: stop after this many chunks even if a target is not met yet (progressive
            pruning removes a few channels at a time); None: until every target is met.
        ladders: per group id, the only widths the group may shrink to (``--round-to auto``:
            the low side of each latency step); groups not listed are free.
    """

    targets: list[Target]
    normalize: str = "memory"
    round_to: int = 1
    max_ratio: float = 0.9
    max_chunks: int | None = None
    ladders: dict[str, list[int]] | None = None


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


class _GroupState:
    """A group's atoms in removal order and how many are gone.

    A group whose pieces reach different layers (``segments``: a split's or a chunk's pieces)
    is rounded piece by piece: every chunk keeps each piece's width a multiple of k and at least
    its own minimum, so no layer is left at an odd width or emptied. The chunks are then planned
    up front, the cheapest next chunk of any piece first.
    """

    def __init__(self, atoms: list[list[int]], scores: torch.Tensor, kept: list[int], min_keep: int, k: int,
                 allowed: set[int] | None = None, segments: list[tuple[list[int], int]] | None = None) -> None:
        # Python floats: indexing the tensor once per atom cost a second per compress on resnet50.
        by_channel = dict(zip(kept, scores.tolist()))
        sums = [sum(by_channel[c] for c in a) for a in atoms]
        mean = [t / len(a) for t, a in zip(sums, atoms)]
        order = sorted(range(len(atoms)), key=lambda i: (mean[i], atoms[i][0]))
        self.atoms = [atoms[i] for i in order]
        self.width = len(kept)
        self.removed = 0
        self.min_keep = min_keep
        self.k = k
        self.allowed = allowed
        self.chunks: list[int] = []  # atoms per chunk removed so far, in order
        # Atoms per planned chunk (piece-wise rounding), or None: chunks found as they are taken.
        self.plan: list[int] | None = None
        if segments is not None and len(segments) > 1 and allowed is None:
            self.atoms, self.plan = _plan_pieces(self.atoms, [mean[i] for i in order], segments, k)
        self.sums = [sum(by_channel[c] for c in a) for a in self.atoms]

    def step(self, k: int | None = None, min_keep: int | None = None) -> int:
        """Atoms the next chunk removes: the fewest that leave a width ≥ min_keep and a multiple of k."""
        if self.plan is not None and k is None:
            i = len(self.chunks)
            if i >= len(self.plan):
                return 0
            n = self.plan[i]
            return n if self.width - self.channels(n) >= (self.min_keep if min_keep is None else min_keep) else 0
        k = self.k if k is None else k
        min_keep = self.min_keep if min_keep is None else min_keep
        w = self.width
        for n in range(1, len(self.atoms) - self.removed):
            w -= len(self.atoms[self.removed + n - 1])
            if w < min_keep:
                return 0
            if w % k == 0 and (self.allowed is None or w in self.allowed):
                return n
        return 0

    def channels(self, n: int) -> int:
        return sum(len(a) for a in self.atoms[self.removed : self.removed + n])

    def score(self, n: int) -> float:
        return sum(self.sums[self.removed : self.removed + n])


def _plan_pieces(atoms: list[list[int]], mean: list[float], segments: list[tuple[list[int], int]],
                 k: int) -> tuple[list[list[int]], list[int]]:
    """Atoms reordered into chunks that keep every piece a multiple of ``k`` wide, and the chunk sizes.

    Pieces an atom spans move together (a chunk's halves stay equal), so they are planned as
    one cluster; within a cluster atoms go in score order, and a chunk ends at the first atom
    that leaves every piece of the cluster at a multiple of ``k``. Clusters' chunks are merged,
    the lowest mean score first. Atoms no chunk can take (a piece at its minimum) go last.

    Args:
        atoms: the group's atoms, lowest score first; ``mean``: their mean scores.
        segments: each piece's channels and the fewest it keeps.
    """
    seg_of = {c: si for si, (chans, _) in enumerate(segments) for c in chans}
    parent = list(range(len(segments)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in atoms:
        for c in a[1:]:
            parent[find(seg_of[c])] = find(seg_of[a[0]])
    # Each cluster's chunks in its own score order: (mean score per channel, atom indices).
    pending: dict[int, list[tuple[float, list[int]]]] = {}
    for root in sorted({find(i) for i in range(len(segments))}):
        members = [i for i in range(len(segments)) if find(i) == root]
        w = {i: len(segments[i][0]) for i in members}
        run: list[int] = []
        for ai, a in enumerate(atoms):
            if find(seg_of[a[0]]) != root:
                continue
            for c in a:
                w[seg_of[c]] -= 1
            if any(w[i] < segments[i][1] for i in members):
                break
            run.append(ai)
            if all(w[i] % k == 0 for i in members):
                size = sum(len(atoms[j]) for j in run)
                pending.setdefault(root, []).append((sum(mean[j] * len(atoms[j]) for j in run) / size, run))
                run = []
    order: list[list[int]] = []
    plan: list[int] = []
    heads = {r: 0 for r in pending}
    while heads:  # merge: the cheapest next chunk of any cluster
        r = min(heads, key=lambda r: (pending[r][heads[r]][0], r))
        run = pending[r][heads[r]][1]
        order += [atoms[j] for j in run]
        plan.append(len(run))
        heads[r] += 1
        if heads[r] == len(pending[r]):
            del heads[r]
    used = {j for runs in pending.values() for _, run in runs for j in run}
    return order + [a for j, a in enumerate(atoms) if j not in used], plan


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
    sel = Selection()
    states: dict[int, _GroupState] = {}
    for gi, g in enumerate(groups):
        if g.id not in scores:
            continue
        s = scores[g.id].double()
        if not comparable:
            s = s / s.abs().mean().clamp_min(1e-12)
        # Limits refer to the width when the graph was traced, so repeated calls (progressive pruning) never compound.
        full = cost_model.full[gi]
        allowed = set(cfg.ladders[g.id]) if cfg.ladders is not None and g.id in cfg.ladders else None
        kept = set(g.kept)
        segments = [([c for c in seg if c in kept], _min_keep(len(seg), cfg)) for seg in g.segments]
        st = _GroupState(g.atoms or [[c] for c in g.kept], s, g.kept, _min_keep(full, cfg), cfg.round_to, allowed,
                         segments)
        unrounded_keep = _min_keep(full, replace(cfg, round_to=1))
        if cfg.round_to > 1 and st.step() == 0 and st.step(1, unrounded_keep) > 0:
            sel.unrounded[g.id] = (
                f"{g.channels} channels in atoms of {g.atom_size}: no width that is a multiple of "
                f"{cfg.round_to} and keeps at least {st.min_keep}; kept whole"
            )
            continue
        states[gi] = st

    def priority(gi: int) -> float | None:
        st = states[gi]
        n = st.step()
        if n == 0:
            return None
        k = st.channels(n)
        cost = norm(cost_model.saving(gi, k, w))
        if cost <= 0:
            return None
        return st.score(n) / cost if cfg.normalize != "none" else st.score(n) / k

    prio = {gi: priority(gi) for gi in states}
    chunks = 0
    while not all(t.met(cost_model.predict(w), base) for t in cfg.targets):
        if cfg.max_chunks is not None and chunks >= cfg.max_chunks:
            break
        chunks += 1
        live = [(p, gi) for gi, p in prio.items() if p is not None]
        if not live:
            sel.met = False
            break
        _, gi = min(live)
        st = states[gi]
        n = st.step()
        k = st.channels(n)
        st.removed += n
        st.chunks.append(n)
        st.width -= k
        w[gi] -= k
        for nb in cost_model.neighbours[gi] | {gi}:
            if nb in prio:
                prio[nb] = priority(nb)
    if sel.met and cfg.max_chunks is None:
        _give_back(cost_model, states, w, cfg, norm)
    for gi, st in states.items():
        if st.removed:
            sel.remove[groups[gi].id] = sorted(c for a in st.atoms[: st.removed] for c in a)
    sel.predicted = cost_model.predict(w)
    return sel


def _give_back(cost_model: CostModel, states: dict[int, _GroupState], w: list[int], cfg: SelectConfig,
               norm: Callable[[dict[str, float]], float]) -> None:
    """Put back the most important removed chunks that the targets can spare.

    The last removal overshoots a target by up to one chunk, and a chunk of a wide early
    layer saves several percent of the MACs: a group's last chunk (its highest-scoring one
    removed) returns while every target stays met, the most important per cost first, until
    none can. The result is as tight as the chunks allow: no removed chunk can come back.
    """
    base = cost_model.base
    while True:
        back = []
        for gi, st in states.items():
            if not st.chunks:
                continue
            n = st.chunks[-1]
            k = sum(len(a) for a in st.atoms[st.removed - n : st.removed])
            w[gi] += k
            fits = all(t.met(cost_model.predict(w), base) for t in cfg.targets)
            w[gi] -= k
            if fits:
                saving = norm(cost_model.saving(gi, k, [*w[:gi], w[gi] + k, *w[gi + 1:]]))
                score = sum(st.sums[st.removed - n : st.removed])
                back.append((-(score / saving if saving > 0 and cfg.normalize != "none" else score / k), gi, n, k))
        if not back:
            return
        _, gi, n, k = min(back)
        st = states[gi]
        st.removed -= n
        st.chunks.pop()
        st.width += k
        w[gi] += k


def check_ratio(name: str, value: float) -> float:
    """Validate a target ratio in (0, 1]."""
    if not (0 < value <= 1):
        raise DeployKitError(f"{name} {value} is outside (0, 1]; give a fraction of the original, e.g. 0.5")
    return value
