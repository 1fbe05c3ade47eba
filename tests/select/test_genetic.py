"""The genetic subset search (ga's layer-by-layer search): exact on small layers, monotone best fitness."""

import itertools

import torch

from deploykit.graph.groups import ModelGraph
from deploykit.importance.features import group_grams
from deploykit.select.genetic import GAConfig, genetic_subset
from tests.importance.nets import Stack


def _stack_gram():
    model = Stack(width=12).eval()
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    graph = ModelGraph(model, x[:1])
    return group_grams(graph, [(x, None)], ["a"])["a"].gram


def _fitness(gram):
    def f(rows):
        drop = 1.0 - rows.double()
        return -torch.einsum("pi,ij,pj->p", drop, gram, drop)
    return f


def test_ga_finds_the_brute_force_optimum_of_a_real_layer():
    gram = _stack_gram()  # the 12 channels of conv a, as conv b sees them
    fit = _fitness(gram)
    for keep in (4, 6, 8):
        subsets = list(itertools.combinations(range(12), keep))
        rows = torch.zeros(len(subsets), 12)
        for i, s in enumerate(subsets):
            rows[i, list(s)] = 1.0
        best = float(fit(rows).max())
        cfg = GAConfig()
        assert cfg.population * (cfg.generations + 1) < len(subsets) or keep != 6  # fewer evaluations than subsets
        res = genetic_subset(12, keep, fit, cfg)
        assert res.fitness == best and int(res.best.sum()) == keep


def test_best_fitness_never_decreases_and_improves():
    z = torch.randn(40, 60, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fit = _fitness(z @ z.T)
    res = genetic_subset(40, 20, fit, GAConfig(population=16, generations=30))
    assert all(b >= a for a, b in zip(res.history, res.history[1:]))
    assert res.history[-1] > res.history[0]
    assert len(res.history) == 31
    # The hall of fame holds distinct subsets, best first, the best one included.
    fits = [f for f, _ in res.hall]
    assert fits == sorted(fits, reverse=True) and fits[0] == res.fitness
    assert len({tuple(r.tolist()) for _, r in res.hall}) == len(res.hall)
