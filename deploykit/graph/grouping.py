"""Torch-Pruning's ``get_pruning_group``, rebuilt to stay bounded and keep every coupling.

Torch-Pruning 1.6 walks the dependency graph pushing *index lists*; a node is walked
again whenever it is reached with a list not seen before. Where index mappings go round a
cycle that keeps producing new lists (attention blocks: reshapes and splits inside a
residual, efficientvit's cascaded groups, YOLO11's C2PSA), the walk and the group grow
without end (minutes, gigabytes). Here every ``(node, handler)`` remembers the
``(position, root channel)`` pairs it already carries and only the new pairs travel on:
the mappings act element by element, so the result is the same group, reached once.

Torch-Pruning also merges a layer's indices by position, keeping the first root channel
seen at a position. Where one position carries two root channels (GhostNet's
``cat([x1, dw(x1)])`` inside a residual ties channel i to channel i + C), that drops a
coupling silently. :func:`pruning_group` returns those ties, so the group's atoms join them.

Both walks are bounded by a :class:`Budget` (time and memory): past it, the caller names the
module to ``--ignore``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers

from deploykit.graph.splits import chunk_partners, refresh_if_pruned


class BudgetExceeded(Exception):
    """Graph building went past its time or memory bound."""


class Unfollowable(Exception):
    """The walk produced channel positions no tensor of the model has (a reshape mapping gone round
    a cycle, as in attention blocks): the group cannot be followed. ``node`` is where it happened."""

    def __init__(self, node: object) -> None:
        super().__init__("channel positions past every tensor's width")
        self.node = node


@dataclass
class Budget:
    """Bounds for building the groups of one model.

    Attributes:
        seconds: wall-clock bound for the whole graph (trace and groups).
        memory_bytes: bound on the growth of this process's resident memory.
    """

    seconds: float = float(os.environ.get("DEPLOYKIT_GRAPH_SECONDS", 300))
    memory_bytes: int = int(float(os.environ.get("DEPLOYKIT_GRAPH_MEMORY_GB", 4)) * (1 << 30))
    start: float = field(default_factory=time.perf_counter)
    base_rss: int = field(default_factory=lambda: _rss())

    def check(self, where: str) -> None:
        """Raise :class:`BudgetExceeded` naming ``where`` when a bound is passed."""
        spent = time.perf_counter() - self.start
        if spent > self.seconds:
            raise BudgetExceeded(f"more than {self.seconds:.0f} s building the channel groups ({where})")
        grown = _rss() - self.base_rss
        if grown > self.memory_bytes:
            raise BudgetExceeded(f"more than {self.memory_bytes / (1 << 30):.1f} GiB building the channel groups ({where})")


def _rss() -> int:
    """Resident memory of this process in bytes (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pruning_group(
    dg: tp.DependencyGraph, module: nn.Module, pruning_fn: Callable, idxs: Sequence[int], budget: Budget | None = None,
    limit: int | None = None,
) -> tuple[tp.Group, list[tuple[int, int]]]:
    """The group of ``module``'s channels ``idxs`` (as ``dg.get_pruning_group``), and its ties.

    Args:
        limit: the widest channel dimension of any tensor of the model: a position at or past it
            (or a layer carrying more (position, root) pairs than ``limit`` squared) cannot be real.

    Raises:
        Unfollowable: the walk left the model's tensors (see ``limit``).
        BudgetExceeded: past ``budget``.

    Returns:
        The merged group (items carry ``root_idxs``) and pairs of root channels that share one
        position of some layer: they can only be removed together.
    """
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        pruning_fn = tp.pruner.function.prune_depthwise_conv_out_channels
    refresh_if_pruned(dg)
    root = dg.module2node[module]
    start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
    root_dep = tp.dependency.Dependency(pruning_fn, pruning_fn, source=root, target=root)
    order: list[tuple[object, object]] = []  # (target, handler) keys in discovery order
    deps: dict[tuple[object, object], object] = {}
    carried: dict[tuple[object, object], dict[tuple[int, int], _helpers._HybridIndex]] = {}

    def add(dep, new: list) -> list:
        key = (dep.target, dep.handler)
        if key not in carried:
            carried[key], deps[key] = {}, dep
            order.append(key)
        have = carried[key]
        fresh = [i for i in new if (i.idx, i.root_idx) not in have]
        if limit is not None and fresh and (max(i.idx for i in fresh) >= limit or len(have) + len(fresh) > limit * limit):
            raise Unfollowable(dep.target)
        for i in fresh:
            have[(i.idx, i.root_idx)] = i
        return fresh

    stack = [(root_dep, add(root_dep, start))]
    steps = 0
    while stack:
        dep, cur = stack.pop()
        steps += 1
        if budget is not None and steps % 256 == 0:
            budget.check(dg._module2name.get(module, "?"))
        node, fn = dep.target, dep.handler
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(fn):
                continue
            mapped = cur
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    mapped = mapping(mapped)
            if not mapped:
                continue
            if new_dep.target.type == tp.ops.OPTYPE.SPLIT:
                mapped = chunk_partners(new_dep.target, mapped)
            fresh = add(new_dep, list(mapped))
            if fresh:
                stack.append((new_dep, fresh))
    group = tp.Group()
    ties: list[tuple[int, int]] = []
    for key in order:
        dep = deps[key]
        if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in dg.ignored_params):
            continue
        first: dict[int, int] = {}
        merged = []
        for i in carried[key].values():
            if i.idx in first:
                if first[i.idx] != i.root_idx:
                    ties.append((first[i.idx], i.root_idx))
                continue
            first[i.idx] = i.root_idx
            merged.append(i)
        item = _helpers.GroupItem(dep, [i.idx for i in merged])
        item.root_idxs = [i.root_idx for i in merged]
        group._group.append(item)
    group._DG = dg
    return group, ties
