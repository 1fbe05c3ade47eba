"""An evolutionary algorithm over weight vectors in [0, 1]^K (blend's calibration search).

The first population holds the given seeds (for blend: each criterion alone, and all of
them equally), the rest random. Each generation keeps the ``elite`` best, then breeds the
others: tournament selection, a random convex mix of two parents, Gaussian mutation,
clipping to [0, 1]. Fitness values are compared with ``>`` (tuples work: accuracy first,
then a tie-break). With elitism the best fitness never decreases, so the result is never
worse than the best seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EAConfig:
    """EA settings."""

    population: int = 10
    generations: int = 6
    elite: int = 2
    tournament: int = 3
    sigma: float = 0.2
    seed: int = 0


@dataclass
class EAResult:
    """Best weights, their fitness, the best fitness after each generation, and every evaluation."""

    best: torch.Tensor
    fitness: Any
    history: list[Any]
    evaluated: list[tuple[torch.Tensor, Any]]


def evolve(k: int, fitness: Callable[[torch.Tensor], Any], cfg: EAConfig = EAConfig(),
           seeds: Sequence[torch.Tensor] = ()) -> EAResult:
    """Maximize ``fitness`` over ``[0, 1]^k``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    size = max(cfg.population, len(seeds))
    pop = [s.double().clamp(0, 1) for s in seeds]
    while len(pop) < size:
        pop.append(torch.rand(k, generator=gen, dtype=torch.float64))
    evaluated: list[tuple[torch.Tensor, Any]] = []

    def score(ws: list[torch.Tensor]) -> list[Any]:
        out = [fitness(w) for w in ws]
        evaluated.extend(zip([w.clone() for w in ws], out))
        return out

    fit = score(pop)
    history = [max(fit)]
    for _ in range(cfg.generations):
        order = sorted(range(len(pop)), key=lambda i: fit[i], reverse=True)
        elite = [pop[i] for i in order[: cfg.elite]]
        elite_fit = [fit[i] for i in order[: cfg.elite]]

        def pick() -> torch.Tensor:
            idx = torch.randint(len(pop), (cfg.tournament,), generator=gen).tolist()
            return pop[max(idx, key=lambda i: fit[i])]

        children = []
        while len(elite) + len(children) < size:
            a, b = pick(), pick()
            mix = torch.rand(k, generator=gen, dtype=torch.float64)
            child = mix * a + (1 - mix) * b + cfg.sigma * torch.randn(k, generator=gen, dtype=torch.float64)
            children.append(child.clamp(0, 1))
        pop = elite + children
        fit = elite_fit + score(children)
        history.append(max(fit))
    best = max(range(len(pop)), key=lambda i: fit[i])
    return EAResult(pop[best].clone(), fit[best], history, evaluated)
