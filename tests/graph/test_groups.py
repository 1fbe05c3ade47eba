import pytest
import torch
import torchvision

from deploykit.errors import UnsupportedModelError
from deploykit.graph import splits
from deploykit.graph.groups import ModelGraph
from tests.graph.test_followed_or_whole import C2fResidual
from tests.models import TwoRes


def test_residual_coupling_and_output_group():
    m = TwoRes().eval()
    g = ModelGraph(m, torch.randn(1, 3, 16, 16))
    ids = {gr.id: gr for gr in g.groups}
    assert set(ids) == {"stem", "conv1", "down", "head"}
    # The stem and the block's conv2 write into one residual stream: one group.
    assert {"stem", "bn", "conv2", "bn2", "conv1", "down"} <= set(ids["stem"].layers)
    assert set(ids["stem"].consumers) == {"conv1", "down"}
    assert ids["head"].prunable is False and ids["head"].reason.startswith("model output")
    assert all(ids[k].prunable for k in ("stem", "conv1", "down"))


def test_ignore_reasons():
    m = TwoRes().eval()
    g = ModelGraph(m, torch.randn(1, 3, 16, 16), ignore=["conv2"])
    ids = {gr.id: gr for gr in g.groups}
    assert ids["stem"].prunable is False
    assert ids["stem"].reason == "coupled to an ignored layer (conv2)"
    g2 = ModelGraph(TwoRes().eval(), torch.randn(1, 3, 16, 16), ignore=["conv1"])
    assert g2.get("conv1").reason == "ignored"
    with pytest.raises(UnsupportedModelError, match="names no module"):
        ModelGraph(TwoRes().eval(), torch.randn(1, 3, 16, 16), ignore=["nope"])


def test_remove_keeps_original_numbering_and_model_runs():
    m = TwoRes().eval()
    g = ModelGraph(m, torch.randn(1, 3, 16, 16))
    g.remove("stem", [1, 5])
    g.remove("stem", [0])
    assert g.get("stem").kept == [2, 3, 4, 6, 7]
    assert m.stem.out_channels == 5 and m.conv1.in_channels == 5 and m.down.in_channels == 5
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 5)


class FunctionalPad(torch.nn.Module):
    """A channel zero-pad written inline: the graph library would treat it as element-wise."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        y = torch.nn.functional.pad(self.a(x), (0, 0, 0, 0, 2, 2))
        return self.head(self.b(y).mean((2, 3)))


def test_inline_channel_padding_is_reported_not_mispruned():
    g = ModelGraph(FunctionalPad().eval(), torch.randn(1, 3, 8, 8))
    a = g.get("a")
    assert not a.prunable and a.reason == "unsupported op: channel zero-padding (F.pad on the channel dim) in <model>"
    assert g.get("b").prunable


def test_torchvision_resnet18_groups():
    m = torchvision.models.resnet18().eval()
    g = ModelGraph(m, torch.randn(1, 3, 64, 64))
    assert len(g.groups) == 13 and len(g.prunable()) == 12


def _maps(dg) -> list[str]:
    """Every dependency's index maps, as comparable text."""
    return [f"{id(node)}>{id(dep.target)}:" + ";".join(f"{type(m).__name__}{sorted(vars(m).items())}" for m in dep.index_mapping
                                                   if m is not None)
            for node in dg.module2node.values() for dep in node.dependencies]


@pytest.mark.parametrize("make", [
    lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16),
    C2fResidual,
], ids=["densenet", "c2f"])
def test_a_removal_leaves_the_index_maps_a_full_refresh_would_build(make):
    g = ModelGraph(make().eval(), torch.randn(1, 3, 32, 32))
    for gr in g.prunable():  # each removal refreshes only the maps of the nodes its group changed
        g.remove(gr.id, [c for atom in gr.atoms[: len(gr.atoms) // 2] for c in atom])
    incremental = _maps(g.dg)
    splits.refresh(g.dg)
    assert _maps(g.dg) == incremental


class TwoIntoCat(torch.nn.Module):
    """Two convs concatenated into a third: removing from the first shifts the second's positions there."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Conv2d(3, 5, 3, padding=1)
        self.out = torch.nn.Conv2d(11, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3))


def _positions_in(g: ModelGraph, gid: str, layer: str) -> list[int]:
    return sorted(p for it in g.tp_items(g.get(gid)) if it.name == layer and not it.out for p in it.idxs)


def test_group_walks_are_reused_until_a_removal_changes_a_width():
    g = ModelGraph(TwoIntoCat().eval(), torch.randn(1, 3, 8, 8))
    b = g.get("b")
    assert g.tp_group(b) is g.tp_group(b)  # walked once at these widths
    assert _positions_in(g, "b", "out") == [6, 7, 8, 9, 10]
    before = g.tp_group(b)
    g.remove("a", [0, 3])  # b's channels now enter `out` two positions earlier
    assert g.tp_group(b) is not before
    assert _positions_in(g, "b", "out") == [4, 5, 6, 7, 8]
    g.remove("b", [1])
    assert _positions_in(g, "b", "out") == [4, 5, 6, 7]
