"""Sensitivity allocation (ga's first step): marginal losses from a curve, channels from the curves and targets."""

import torch

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.select import SelectConfig, Target
from deploykit.select.sensitivity import allocate, marginal_scores
from tests.models import TwoRes


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
