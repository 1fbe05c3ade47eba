"""ga: sensitivity allocation, the genetic search and its two-step fitness."""

import itertools
from types import SimpleNamespace

import torch

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion
from deploykit.importance.features import group_grams
from deploykit.select import SelectConfig, Target
from deploykit.select.genetic import GAConfig, genetic_subset
from deploykit.select.sensitivity import allocate, marginal_scores
from deploykit.train.distributed import Dist
from tests.importance.nets import Stack
from tests.models import TwoRes, randomize_bn


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


def test_marginal_losses_from_a_sensitivity_curve():
    m = marginal_scores(8, [(0.25, 1.0), (0.5, 3.0), (0.75, 6.0)])
    assert torch.allclose(m, torch.tensor([0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5], dtype=torch.float64))
    # A curve that dips is made non-decreasing: a later channel never looks cheaper.
    m = marginal_scores(4, [(0.5, 2.0), (0.75, 1.0)])
    assert (m[1:] >= m[:-1]).all()


def test_allocation_prunes_the_insensitive_group_and_meets_the_target():
    graph = ModelGraph(TwoRes(16).eval(), torch.randn(1, 3, 16, 16))
    cm = CostModel(graph)
    probe = {g.id: torch.arange(g.channels) for g in graph.prunable()}
    flat, steep = [(0.25, 0.0), (0.5, 0.01), (0.75, 0.02)], [(0.25, 1.0), (0.5, 5.0), (0.75, 20.0)]
    curves = {gid: (flat if gid == "conv1" else steep) for gid in probe}
    for target in (0.6, 0.4):
        cfg = SelectConfig([Target("macs", target)], normalize="none", max_ratio=0.75)
        counts = allocate(cm, curves, probe, cfg)
        widths = [g.channels - counts.get(g.id, 0) for g in graph.groups]
        assert cm.predict(widths).macs <= target * cm.base.macs
        if target == 0.6:  # the insensitive group alone can meet it: nothing else is touched
            assert set(counts) == {"conv1"}
        else:  # it cannot: the insensitive group goes as far as --max-ratio lets it, then the others
            assert counts["conv1"] == 12 and sum(counts.values()) > 12


def test_ga_selection_meets_the_target_with_the_allocated_widths():
    torch.manual_seed(0)
    model = randomize_bn(TwoRes(8))
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    graph = ModelGraph(model, x[:1])
    cm = CostModel(graph)
    cfg = SelectConfig([Target("macs", 0.7)], normalize="none")
    job = SimpleNamespace(graph=graph, cost_model=cm, select=cfg, dist=Dist(), scoring=ScoringContext(model, graph),
                          calibration=lambda: iter([(x[:8], y[:8]), (x[8:], y[8:])]))
    crit = get_criterion("ga")
    removal = crit.select(job)
    assert {gid: len(idxs) for gid, idxs in removal.items()} == {k: v for k, v in crit.allocation.items() if v}
    widths = [g.channels - len(removal.get(g.id, [])) for g in graph.groups]
    assert cm.predict(widths).macs <= 0.7 * cm.base.macs
    for res in crit.results.values():
        assert all(b >= a for a, b in zip(res.history, res.history[1:]))
