"""Constructs the graph must understand or refuse clearly."""

import pytest
import torch
import torchvision
from torch import nn

from deploykit.errors import UnsupportedModelError
from deploykit.graph.groups import ModelGraph


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class Act(nn.Module):
    def forward(self, x):
        return Square.apply(x)


class WithCustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), Act())
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.b(self.block(self.a(x))).mean((2, 3)))


def test_custom_autograd_function_names_module_and_hint():
    with pytest.raises(UnsupportedModelError) as e:
        ModelGraph(WithCustomOp().eval(), torch.randn(1, 3, 8, 8))
    msg = str(e.value)
    assert "unsupported op Square (a custom autograd function) in module 'block.1'" in msg
    assert msg.endswith("leave it out with --ignore block.1")
    assert "\n" not in msg


def test_ignoring_the_module_makes_it_opaque():
    g = ModelGraph(WithCustomOp().eval(), torch.randn(1, 3, 8, 8), ignore=["block"])
    assert g.get("a").reason == "coupled to an ignored layer (block)"
    assert g.get("b").prunable
    assert "block.0" not in {gr.id for gr in g.prunable()}


def test_graph_library_crash_is_one_line_naming_the_op(monkeypatch):
    import torch_pruning as tp

    def boom(graph):
        node = next(iter(graph.module2node.values()))  # a local named `node`, as the library's code has
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(tp.dependency.index_mapping, "update_index_mapping", boom)
    with pytest.raises(UnsupportedModelError) as e:
        ModelGraph(WithCustomOp().eval(), torch.randn(1, 3, 8, 8), ignore=["block"])
    assert "ZeroDivisionError" in str(e.value) and "--ignore" in str(e.value)


def test_shufflenet_chunk_and_shuffle():
    m = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    g = ModelGraph(m, torch.randn(1, 3, 32, 32))
    shuffled = [gr for gr in g.groups if not gr.prunable and "channel shuffle" in (gr.reason or "")]
    assert shuffled and all(gr.reason.startswith("unsupported op: channel shuffle") for gr in shuffled)
    internal = g.get("stage2.1.branch2.0")  # a branch's own channels, between chunk and shuffle
    assert internal.prunable and set(internal.layers) == {"stage2.1.branch2.0", "stage2.1.branch2.1",
                                                          "stage2.1.branch2.3", "stage2.1.branch2.4", "stage2.1.branch2.5"}


def test_grouped_convs_lose_whole_groups():
    from torchvision.models import resnet

    m = resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10).eval()
    g = ModelGraph(m, torch.randn(1, 3, 32, 32))
    grp = g.get("layer1.0.conv1")
    conv = m.layer1[0].conv2
    per = conv.out_channels // conv.groups
    assert grp.atom_size == per and all(a == list(range(a[0], a[0] + per)) for a in grp.atoms)
    groups_before = conv.groups
    g.remove(grp.id, grp.atoms[1] + grp.atoms[5])
    assert conv.groups == groups_before - 2 and conv.in_channels == conv.out_channels == per * conv.groups
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_depthwise_is_coupled_with_its_producer():
    m = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10).eval()
    g = ModelGraph(m, torch.randn(1, 3, 32, 32))
    # The first block's depthwise conv carries the stem's channels: no group of its own.
    assert "features.1.conv.0.0" in g.get("features.0.0").layers
    assert "features.1.conv.0.0" not in {gr.id for gr in g.groups}
    # Later blocks: expansion conv, depthwise conv and projection share one group.
    assert {"features.2.conv.0.0", "features.2.conv.1.0", "features.2.conv.2"} <= set(g.get("features.2.conv.0.0").layers)
