"""blend: criteria clustering, the calibrated blend, and its search on digits no worse than any single criterion
(the evolutionary search itself: tests/select/test_evolution.py)."""

from types import SimpleNamespace

import torch

from deploykit.data import batches, load_dataset
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext
from deploykit.select.blend import POOL, BlendedCriteria, blend, cluster_criteria, normalized_ranks
from deploykit.select import SelectConfig, Target
from deploykit.select.evolution import EAConfig
from deploykit.train.distributed import Dist


def test_clustering_merges_agreeing_criteria_and_keeps_opposed_ones_apart():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, generator=g)
    b = torch.rand(20, generator=g)
    scores = [a, 2 * a + 1, a.pow(3), -a, b]  # 0, 1, 2 rank identically; 3 is reversed; 4 unrelated
    ranks = torch.stack([normalized_ranks(s) for s in scores])
    c = cluster_criteria(ranks, threshold=0.9)
    assert c.cluster_of[0] == c.cluster_of[1] == c.cluster_of[2]
    assert len({c.cluster_of[0], c.cluster_of[3], c.cluster_of[4]}) == 3
    assert c.representative[c.cluster_of[1]] in (0, 1, 2)


def test_a_clustered_away_criterion_is_represented_by_its_cluster():
    ranks = torch.stack([normalized_ranks(torch.tensor(s, dtype=torch.float64)) for s in
                         ([1, 2, 3, 4], [1, 2, 3, 4.5], [4, 3, 2, 1])])
    c = cluster_criteria(ranks, threshold=0.9)
    alone = torch.tensor([0.0, 1.0, 0.0])  # criterion 1 alone; it shares a cluster with criterion 0
    assert torch.allclose(blend(ranks, c, alone), ranks[1])
    both = torch.tensor([1.0, 0.0, 1.0])  # two opposed clusters, equal weights: every channel ties
    assert torch.allclose(blend(ranks, c, both), torch.full((4,), 0.5, dtype=torch.float64))


def test_blend_search_on_digits_beats_or_ties_every_single_criterion(digits_model):
    model = digits_model.model.eval()
    pre = digits_model.preprocess
    ds = load_dataset("digits:train")
    calib = list(batches(ds, pre, 32, shuffle=True, seed=0, limit=2))
    graph = ModelGraph(model, digits_model.example_input())
    cm = CostModel(graph)
    job = SimpleNamespace(graph=graph, model=model, cost_model=cm, select=SelectConfig([Target("macs", 0.5)], normalize="none"),
                          dist=Dist(), scoring=ScoringContext(model, graph), calibration=lambda: iter(calib))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    crit = BlendedCriteria(ea=EAConfig(population=6, generations=3))  # the registered one, with a smaller search
    removal = crit.select(job)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the search left the model as it was
    res = crit.result
    singles = [f for w, f in res.evaluated[: len(POOL)]]
    assert all(torch.equal(w, torch.eye(len(POOL), dtype=torch.float64)[i]) for i, (w, _) in enumerate(res.evaluated[: len(POOL)]))
    assert res.fitness >= max(singles)
    assert all(b >= a for a, b in zip(res.history, res.history[1:]))
    widths = [g.channels - len(removal.get(g.id, [])) for g in graph.groups]
    assert cm.predict(widths).macs <= 0.5 * cm.base.macs
