"""Pruned copies of a model at given group widths: what latency tables are checked against.

Which channels go does not matter for latency, only how many; a variant keeps the
first atoms of every group. The copy is traced again, so the original is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from deploykit.graph.copies import shared_copy
from deploykit.graph.groups import ModelGraph


def prune_to_widths(model: nn.Module, example: torch.Tensor, widths: dict[str, int], ignore: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` whose group ``gid`` keeps ``widths[gid]`` channels (whole atoms, rounded up).

    The copy's unpruned tensors share storage with ``model``'s: pruning replaces a layer's
    tensors with new ones and never writes into them, and copying a VGG's 500 MB of weights
    for every calibration variant took a third of the variant's making.
    """
    clone = shared_copy(model).eval()
    graph = ModelGraph(clone, example, ignore=ignore)
    for g in graph.prunable():
        want = widths.get(g.id)
        if want is None or want >= g.channels:
            continue
        atoms = g.atoms or [[c] for c in g.kept]
        keep, n = [], 0
        for a in atoms:  # keep atoms in order until the width is reached
            if n >= want:
                break
            keep.append(a)
            n += len(a)
        kept = {c for a in keep for c in a}
        graph.remove(g.id, [c for c in g.kept if c not in kept])
    return clone


def random_widths(full: dict[str, int], units: dict[str, int], rng: np.random.Generator, low: float = 0.3,
                  high: float = 1.0, round_to: int = 8, keep_p: float = 0.15) -> dict[str, int]:
    """Random widths: each group keeps a uniform fraction in ``[low, high]`` (or stays whole with
    probability ``keep_p``), rounded to a multiple of ``round_to`` atoms' channels, at least one."""
    out = {}
    for gid, c in full.items():
        if rng.random() < keep_p:
            out[gid] = c
            continue
        q = max(1, round_to) * max(1, units.get(gid, 1))
        w = max(q, int(round(rng.uniform(low, high) * c / q)) * q)
        out[gid] = min(c, w) if c >= q else c
    return out


def uniform_widths(full: dict[str, int], fraction: float, allowed: dict[str, list[int]] | None = None,
                   unit: int = 8) -> dict[str, int]:
    """Every group at about ``fraction`` of its width: the largest allowed width not above it
    (else a multiple of ``unit``), never below the smallest allowed one."""
    out = {}
    for gid, c in full.items():
        target = fraction * c
        ladder = sorted((allowed or {}).get(gid) or [])
        if ladder:
            below = [w for w in ladder if w <= target + 1e-9]
            out[gid] = below[-1] if below else ladder[0]
        else:
            out[gid] = max(min(c, unit), min(c, int(math.floor(target / unit)) * unit))
    return out
