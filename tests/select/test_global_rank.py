import pytest
import torch

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.select import SelectConfig, Target, select_global
from deploykit.select.global_rank import check_ratio
from deploykit.errors import DeployKitError
from tests.models import TwoRes


def _setup(c=16):
    graph = ModelGraph(TwoRes(c).eval(), torch.randn(1, 3, 16, 16))
    return graph, CostModel(graph)


def test_memory_normalization_prefers_high_resolution_channels():
    graph, cm = _setup()
    # Equal Fisher everywhere: the cost decides. conv1 runs at 16x16, down at 8x8.
    scores = {g.id: torch.ones(g.channels) for g in graph.prunable()}
    first = select_global(cm, {k: scores[k] for k in ("conv1", "down")},
                          SelectConfig([Target("macs", 0.999)], normalize="memory"))
    assert list(first.remove) == ["conv1"]


def test_targets_round_to_and_max_ratio():
    graph, cm = _setup(16)
    g = torch.Generator().manual_seed(0)
    scores = {gr.id: torch.rand(gr.channels, generator=g) for gr in graph.prunable()}
    sel = select_global(cm, scores, SelectConfig([Target("macs", 0.5)], normalize="flops", round_to=4, max_ratio=0.75))
    assert sel.met and sel.predicted.macs <= 0.5 * cm.base.macs
    for gid, idxs in sel.remove.items():
        full = graph.get(gid).channels
        assert (full - len(idxs)) % 4 == 0 and full - len(idxs) >= full * 0.25
        # The lowest-scoring channels of a group go first.
        kept = sorted(set(range(full)) - set(idxs))
        assert scores[gid][idxs].max() <= scores[gid][kept].min()
    for gid, idxs in sel.remove.items():
        graph.remove(gid, idxs)
    from deploykit.graph.costs import measure

    assert measure(graph.model, graph.example_input).macs == sel.predicted.macs


def test_unreachable_target_is_reported():
    graph, cm = _setup(8)
    scores = {gr.id: torch.ones(gr.channels) for gr in graph.prunable()}
    sel = select_global(cm, scores, SelectConfig([Target("macs", 0.01)], normalize="none", round_to=8))
    assert not sel.met
    assert set(sel.unrounded) == {"stem", "conv1"}  # 8 channels < 2 x 8


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_ratio_outside_unit_interval(bad):
    with pytest.raises(DeployKitError, match=r"outside \(0, 1\]"):
        check_ratio("--target-macs", bad)
