"""Round-to applies to every piece a split or chunk sends to a layer of its own, not only to the group:
ONNX Runtime and TensorRT run a depthwise conv of 97 channels far slower than its MACs say (timm mixnet_s at
half the MACs ran at 0.94 of the base latency while its pieces had odd widths)."""

from __future__ import annotations

import torch
from torch import nn

from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from deploykit.graph.verify import masked_reference
from deploykit.select import SelectConfig, Target, select_global
from tests.models import cbr


class Mixed(nn.Module):
    """MixNet's mixed depthwise conv (stored unequal widths) and YOLOv8's C2f chunk, one after the other."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.exp = cbr(3, 16), cbr(16, 96, 1)
        self.splits = [40, 56]
        self.dw = nn.ModuleList([cbr(40, 40, 3, groups=40), cbr(56, 56, 5, groups=56)])
        self.cv1, self.m, self.cv2 = cbr(96, 64, 1), cbr(32, 32), cbr(96, 32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([m(p) for m, p in zip(self.dw, self.exp(self.stem(x)).split(self.splits, 1))], 1)
        a, b = self.cv1(y).chunk(2, 1)
        return self.cv2(torch.cat([a, b, self.m(b)], 1)).mean((2, 3))


def _select(graph: ModelGraph, seed: int):
    g = torch.Generator().manual_seed(seed)
    scores = {gr.id: torch.rand(gr.channels, generator=g) for gr in graph.prunable()}
    cfg = SelectConfig([Target("macs", 0.5)], normalize="flops", round_to=8)
    return select_global(CostModel(graph), scores, cfg)


def test_every_piece_keeps_a_multiple_of_round_to_and_the_model_stays_exact():
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(1, 3, 16, 16)
    graph = ModelGraph(model, x)
    assert [len(s) for s in graph.get("exp.0").segments] == [40, 56]
    assert [len(s) for s in graph.get("cv1.0").segments] == [32, 32]
    for seed in range(5):  # the pieces' scores interleave differently with every seed
        model = Mixed().eval()
        graph = ModelGraph(model, x)
        sel = _select(graph, seed)
        assert sel.met and sel.predicted.macs <= 0.5 * CostModel(graph).base.macs
        ref = masked_reference(model, graph, {k: set(v) for k, v in sel.remove.items()})
        for gid, idxs in sel.remove.items():
            graph.remove(gid, idxs)
        widths = [m[0].out_channels for m in model.dw] + [model.m[0].in_channels, model.cv2[0].in_channels]
        assert all(w % 8 == 0 and w >= 8 for w in widths), (seed, widths)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
        # The cost model spreads a group's removal over its pieces in proportion (it counts widths, not which
        # channels go), so pieces of different kernel sizes make the prediction approximate; compress measures the
        # pruned model and removes more should a target be missed (Job.pruning_done).
        assert abs(measure(model, x).macs - sel.predicted.macs) <= 0.01 * sel.predicted.macs


def test_without_pieces_the_group_alone_is_rounded():
    """The check above can fail: the same selection with the pieces forgotten leaves some piece at an odd width."""
    x = torch.randn(1, 3, 16, 16)
    odd = 0
    for seed in range(5):
        model = Mixed().eval()
        graph = ModelGraph(model, x)
        for g in graph.groups:
            g.segments = []
        sel = _select(graph, seed)
        for gid, idxs in sel.remove.items():
            graph.remove(gid, idxs)
        odd += any(m[0].out_channels % 8 for m in model.dw)
    assert odd > 0
