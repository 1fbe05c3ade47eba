"""Constructs users' models are made of: each is followed exactly (pruned == masked, predicted MACs ==
measured) or its group is left whole with a reason a person can read; nothing crashes, nothing is
silently wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from deploykit.graph.verify import masked_reference, probe, probe_removal
from tests.models import cbr


class StaleSplit(nn.Module):
    """Split by widths computed from the module's state: no one attribute holds them, so they go stale."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.exp = cbr(3, 16), cbr(16, 16, 1)
        self.first = 6  # the widths are [first, 16 - first]: unequal, and no attribute equals them
        self.a, self.b, self.out = cbr(6, 8), cbr(10, 8), cbr(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.exp(self.stem(x)).split([self.first, 16 - self.first], dim=1)
        return self.out(torch.cat([self.a(a), self.b(b)], 1)).mean((2, 3))


class MixSplit(nn.Module):
    """timm MixNet: split by a stored list of unequal widths, one depthwise conv per piece."""

    def __init__(self) -> None:
        super().__init__()
        self.splits = (6, 10)  # a tuple, as timm stores it
        self.a, self.b = cbr(6, 6, groups=6), cbr(10, 10, groups=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.split(self.splits, dim=1)
        return torch.cat([self.a(a), self.b(b)], 1)


class PieceSplit(nn.Module):
    """Res2Net: split by a stored piece width into equal pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 4
        self.pieces = nn.ModuleList(cbr(4, 4) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(p) for m, p in zip(self.pieces, x.split(self.width, dim=1))], 1)


class PairSplit(nn.Module):
    """YOLO11 C2PSA: split((self.c, self.c)), the second half added to a function of the first."""

    def __init__(self) -> None:
        super().__init__()
        self.c = 8
        self.q, self.v = cbr(8, 8), cbr(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, v = x.split((self.c, self.c), dim=1)
        return torch.cat([q, self.v(v) + self.q(q)], 1)


class HalfSplit(nn.Module):
    """CSPNet: split(self.expand_chs // 2), the stored total halved."""

    def __init__(self) -> None:
        super().__init__()
        self.expand_chs = 16
        self.b = cbr(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, t = x.split(self.expand_chs // 2, dim=1)
        return torch.cat([s, self.b(t)], 1)


class StoredWidths(nn.Module):
    """Splits by widths their modules store, one construct after another."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.mix, self.mixer = cbr(16, 16, 1), MixSplit()
        self.res, self.res2 = cbr(16, 16, 1), PieceSplit()
        self.psa, self.attn = cbr(16, 16, 1), PairSplit()
        self.csp, self.cross = cbr(16, 16, 1), HalfSplit()
        self.out = cbr(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mixer(self.mix(self.stem(x)))
        y = self.res2(self.res(y))
        y = self.attn(self.psa(y))
        return self.out(self.cross(self.csp(y))).mean((2, 3))


class ChunkReused(nn.Module):
    """YOLOv8 C2f (neck): chunk(2, 1), the second half used twice (by the bottleneck and by the concat)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.cv1 = cbr(3, 16), cbr(16, 16, 1)
        self.m, self.cv2 = cbr(8, 8), cbr(24, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(self.stem(x)).chunk(2, 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1)).mean((2, 3))


class C2fResidual(nn.Module):
    """YOLOv8 C2f (backbone): chunk(2, 1) into residual bottlenecks; the concat reads both halves and each output."""

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.stem, self.cv1 = cbr(3, 16), cbr(16, 16, 1)
        self.m = nn.ModuleList(nn.Sequential(cbr(8, 8), cbr(8, 8)) for _ in range(n))
        self.cv2 = cbr(8 * (2 + n), 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(self.stem(x)).chunk(2, 1))
        y.extend(y[-1] + m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1)).mean((2, 3))


class PartialResidual(nn.Module):
    """ReXNet: the shortcut adds into the first ``in_channels`` channels only."""

    def __init__(self) -> None:
        super().__init__()
        self.pre, self.stem, self.conv = cbr(3, 8), cbr(8, 8), cbr(8, 12)
        self.in_channels = 8
        self.head = cbr(12, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(self.pre(x))
        y = self.conv(s)
        y = torch.cat([y[:, 0:self.in_channels] + s, y[:, self.in_channels:]], dim=1)
        return self.head(y).mean((2, 3))


class GhostResidual(nn.Module):
    """GhostNet: cat([x1, dw(x1)]) inside a residual ties channel i to channel i + C."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.primary, self.cheap = cbr(16, 8, 1), cbr(8, 8, 3, groups=8)
        self.head = cbr(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        x1 = self.primary(s)
        return self.head(torch.cat([x1, self.cheap(x1)], 1) + s).mean((2, 3))


class Reparam(nn.Module):
    """MobileOne / RepVGG / FastViT: 3x3, 1x1 and identity-BN branches summed."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.k3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.k1 = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.skip = nn.BatchNorm2d(16)
        self.head = cbr(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(F.relu(self.k3(s) + self.k1(s) + self.skip(s))).mean((2, 3))


class QKVAttention(nn.Module):
    """MobileViTv2-style: one conv makes q, k, v split [1, d, d]; attention over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.d = cbr(3, 16), 16
        self.qkv = nn.Conv2d(16, 1 + 2 * 16, 1)
        self.proj, self.head = nn.Conv2d(16, 16, 1), cbr(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        q, k, v = self.qkv(s).split([1, self.d, self.d], dim=1)
        ctx = (k * q.softmax(dim=-1)).sum(-1, keepdim=True)
        return self.head(self.proj(F.relu(v) * ctx) + s).mean((2, 3))


class ChannelLayerNorm(nn.Module):
    """ConvNeXt-style LayerNorm over channels: zeroing is not removal; the reference is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.norm, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm(16), cbr(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(s).mean((2, 3))


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def _check(model: nn.Module) -> tuple[ModelGraph, dict[str, str]]:
    """Probe, then prune the followed groups for real: pruned == masked, predicted MACs == measured."""
    torch.manual_seed(0)
    model = _randomize(model)
    x = torch.randn(1, 3, 16, 16)
    graph = ModelGraph(model, x)
    verdict = probe(model, x, graph)
    for gid, why in verdict.failed.items():
        assert not graph.get(gid).prunable and graph.get(gid).reason == why
        assert why.startswith("not followed: ") and "Op:" not in why  # no internal names like <_ElementWiseOp:2>
    costs = CostModel(graph)
    removal = probe_removal(graph, seed=1)
    ref = masked_reference(model, graph, removal)
    for gid, chans in removal.items():
        graph.remove(gid, chans)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert costs.predict().macs == measure(model, x).macs
    return graph, verdict.failed


@pytest.mark.parametrize("cls,layer", [(StaleSplit, "exp.0"), (PartialResidual, "stem.0"),
                                       (QKVAttention, "qkv")])
def test_a_construct_that_cannot_be_followed_is_left_whole_with_its_reason(cls, layer):
    graph, failed = _check(cls())  # the rest is pruned exactly
    group = graph.get(layer)
    assert not group.prunable and group.reason
    assert graph.prunable(), "the rest of the model is still pruned"


def test_a_stale_split_is_found_by_the_self_check():
    _, failed = _check(StaleSplit())
    assert any("split_with_sizes" in why for why in failed.values())


def test_chunk_halves_go_together_and_are_pruned_exactly():
    """chunk(2) splits by the tensor's width: channel i of one half goes with channel i of the other."""
    graph, failed = _check(ChunkReused())
    assert not failed
    g = graph.get("cv1.0")
    assert g.prunable and g.atoms and all(len(a) == 2 and a[1] - a[0] == 8 for a in g.atoms)
    assert g.channels < 16, "the probe removed some pairs"
    assert graph.get("m.0").prunable and set(graph.get("m.0").layers) >= {"m.0", "cv2.0"}


def test_c2f_residual_chain_is_one_group_with_its_halves():
    graph, failed = _check(C2fResidual())
    assert not failed
    g = graph.get("cv1.0")
    # The residual ties the second half to each bottleneck's output conv; the concat reads all of them.
    assert g.prunable and {"m.0.1.0", "m.1.1.0", "cv2.0"} <= set(g.layers)
    assert all(len(a) == 2 and a[1] - a[0] == 8 for a in g.atoms)


def test_widths_a_module_stores_are_rewritten_and_followed():
    model = StoredWidths()
    graph, failed = _check(model)  # pruned == masked, predicted MACs == measured
    assert not failed
    for root in ("mix.0", "res.0", "psa.0", "csp.0"):
        assert graph.get(root).prunable, root
    # Each attribute now holds the pruned widths, in its own type.
    mix, res, psa, csp = (graph.get(r).channels for r in ("mix.0", "res.0", "psa.0", "csp.0"))
    assert isinstance(model.mixer.splits, tuple) and sum(model.mixer.splits) == mix
    assert model.res2.width * 4 == res and model.attn.c * 2 == psa and model.cross.expand_chs == csp
    assert (mix, res, psa, csp) != (16, 16, 16, 16), "the probe removed some channels"
    # Equal pieces stay equal: channel i of each piece is one atom.
    assert graph.get("res.0").atom_size == 4 and graph.get("psa.0").atom_size == 2


def test_ghost_halves_are_one_atom_and_pruned_exactly():
    graph, failed = _check(GhostResidual())
    assert not failed
    g = next(g for g in graph.groups if "stem.0" in g.layers)
    assert g.prunable and g.atom_size == 2  # channel i goes with channel i + 8


def test_reparam_branches_are_followed():
    graph, failed = _check(Reparam())
    assert not failed
    assert graph.get("stem.0").prunable and {"k3.0", "k1.0", "skip"} <= set(graph.get("stem.0").layers)


def test_layernorm_over_channels_is_checked_against_an_exact_reference():
    graph, failed = _check(ChannelLayerNorm())
    assert not failed and graph.get("stem").prunable


def test_groupnorm_with_groups_is_left_whole():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.Conv2d(8, 4, 1))
    graph = ModelGraph(model.eval(), torch.randn(1, 3, 8, 8))
    probe(model, torch.randn(1, 3, 8, 8), graph)
    assert not graph.get("0").prunable and "GroupNorm with 4 groups" in graph.get("0").reason


def test_a_group_walk_that_leaves_the_tensors_stops_instead_of_hanging():
    """A reshape inside a residual cycle made Torch-Pruning's walk grow without end (efficientvit, C2PSA)."""

    class Cycle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            for _ in range(3):  # view to heads and back, added into the stream
                b, c, h, w = y.shape
                t = self.b(y).view(b, 2, c // 2, h * w).transpose(-1, -2).reshape(b, c, h, w)
                y = y + t
            return self.c(y)

    model = Cycle().eval()
    x = torch.randn(1, 3, 4, 4)
    graph = ModelGraph(model, x)
    probe(model, x, graph)
    for g in graph.groups:
        assert g.prunable or g.reason  # every group is decided, with a reason when left whole
