"""The evolutionary search (blend's weight search): never worse than its seeds."""

import torch

from deploykit.select.evolution import EAConfig, evolve


def test_evolution_is_never_worse_than_its_seeds_and_improves():
    target = torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64)

    def fitness(w):
        return -float((w - target).pow(2).sum())

    seeds = [torch.eye(3, dtype=torch.float64)[i] for i in range(3)]
    res = evolve(3, fitness, EAConfig(population=8, generations=15), seeds)
    assert all(b >= a for a, b in zip(res.history, res.history[1:]))
    assert res.fitness >= max(fitness(s) for s in seeds)
    assert res.fitness > -0.05
