"""A genetic algorithm over fixed-size subsets (Hu et al. 2018's channel selection).

An individual keeps exactly ``keep`` of ``n`` genes (a 0/1 row). Each generation:
tournament selection of parents, cardinality-preserving uniform crossover (genes both
parents keep are kept, the rest drawn from the genes either keeps), swap mutation (a kept
gene for a dropped one, repeated with probability ``mutation``), and elitism (the best
``elite`` individuals survive unchanged). A child identical to one already evaluated is
bred again (up to 10 tries), which keeps small populations from collapsing onto one
subset. Fitness is higher-is-better and evaluated for a
whole population at once, so a cheap vectorized fitness (a quadratic form) costs one call.
With elitism and a deterministic fitness, the best fitness never decreases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

Fitness = Callable[[torch.Tensor], torch.Tensor]  # [P, n] 0/1 rows -> [P] fitness, higher = better


@dataclass(frozen=True)
class GAConfig:
    """GA settings (defaults: small enough to run per layer of a ResNet on a CPU)."""

    population: int = 24
    generations: int = 25
    elite: int = 2
    tournament: int = 3
    crossover: float = 0.9
    mutation: float = 0.5
    hall: int = 4
    seed: int = 0


@dataclass
class GAResult:
    """The best individual, its fitness, the best fitness after each generation (fewer generations when the
    search exhausted the subsets), and the distinct best seen."""

    best: torch.Tensor
    fitness: float
    history: list[float]
    hall: list[tuple[float, torch.Tensor]] = field(default_factory=list)


def _random_subset(n: int, keep: int, gen: torch.Generator) -> torch.Tensor:
    row = torch.zeros(n)
    row[torch.randperm(n, generator=gen)[:keep]] = 1.0
    return row


def _crossover(a: torch.Tensor, b: torch.Tensor, keep: int, gen: torch.Generator) -> torch.Tensor:
    child = a * b
    pool = torch.nonzero((a + b) == 1).flatten()
    need = keep - int(child.sum())
    if need > 0:
        child[pool[torch.randperm(len(pool), generator=gen)[:need]]] = 1.0
    return child


def _mutate(row: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    row = row.clone()
    while float(torch.rand(1, generator=gen)) < rate:
        on, off = torch.nonzero(row == 1).flatten(), torch.nonzero(row == 0).flatten()
        if not len(on) or not len(off):
            break
        i = on[torch.randint(len(on), (1,), generator=gen)]
        j = off[torch.randint(len(off), (1,), generator=gen)]
        row[i], row[j] = 0.0, 1.0
    return row


def genetic_subset(n: int, keep: int, fitness: Fitness, cfg: GAConfig = GAConfig(),
                   seeds: Sequence[torch.Tensor] = ()) -> GAResult:
    """Search the ``keep``-subsets of ``n`` genes for the highest ``fitness``.

    Args:
        seeds: individuals placed in the first population (e.g. a greedy solution).
    """
    if not 0 < keep <= n:
        raise ValueError(f"keep must be in 1..{n}, got {keep}")
    gen = torch.Generator().manual_seed(cfg.seed)
    pop = [s.float().clone() for s in seeds][: cfg.population]
    while len(pop) < cfg.population:
        pop.append(_random_subset(n, keep, gen))
    rows = torch.stack(pop)
    fit = fitness(rows).double()
    seen: dict[bytes, float] = {}

    def remember(rows: torch.Tensor, fit: torch.Tensor) -> None:
        for r, f in zip(rows, fit.tolist()):
            seen.setdefault(r.to(torch.uint8).numpy().tobytes(), f)

    remember(rows, fit)
    history = [float(fit.max())]
    space = math.comb(n, keep)
    for _ in range(cfg.generations):
        if len(seen) >= space:  # every subset has been evaluated: the best one is known
            break
        order = torch.argsort(fit, descending=True)
        children = [rows[i].clone() for i in order[: cfg.elite]]

        def pick() -> torch.Tensor:
            contenders = torch.randint(len(rows), (cfg.tournament,), generator=gen)
            return rows[contenders[torch.argmax(fit[contenders])]]

        taken = {c.to(torch.uint8).numpy().tobytes() for c in children}
        while len(children) < cfg.population:
            for _ in range(10):  # a child already seen would teach nothing: breed again (diversity)
                a, b = pick(), pick()
                child = _crossover(a, b, keep, gen) if float(torch.rand(1, generator=gen)) < cfg.crossover else a.clone()
                child = _mutate(child, cfg.mutation, gen)
                key = child.to(torch.uint8).numpy().tobytes()
                if key not in seen and key not in taken:
                    break
            taken.add(key)
            children.append(child)
        rows = torch.stack(children)
        fit = fitness(rows).double()
        remember(rows, fit)
        history.append(float(fit.max()))
    best = int(torch.argmax(fit))
    ranked = sorted(seen.items(), key=lambda kv: -kv[1])[: cfg.hall]
    hall = [(f, torch.frombuffer(bytearray(k), dtype=torch.uint8).float()) for k, f in ranked]
    return GAResult(rows[best].clone(), float(fit[best]), history, hall)
