"""ga: the criterion end to end, sensitivity allocation then the genetic search with its two-step fitness
(the search parts: tests/select/test_sensitivity.py, tests/select/test_genetic.py)."""

from types import SimpleNamespace

import torch

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion
from deploykit.select import ga  # noqa: F401  (registers the "ga" criterion)
from deploykit.select import SelectConfig, Target
from deploykit.train.distributed import Dist
from tests.models import TwoRes, randomize_bn


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
