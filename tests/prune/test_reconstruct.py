"""--recover reconstruct: least-squares refits that restore what removed channels contributed."""

import copy

import torch

from deploykit.graph.groups import ModelGraph
from deploykit.prune.reconstruct import reconstruct
from deploykit.prune.survivors import surviving
from tests.importance.nets import Stack
from tests.models import TwoRes


def _duplicated_stack():
    """Channel 5 of conv a is an exact copy of channel 2: conv b can take over its part exactly."""
    model = Stack(width=8).double().eval()
    with torch.no_grad():
        model.a.weight[5] = model.a.weight[2]
    return model


def test_reconstruction_recovers_a_removed_duplicate_exactly():
    model = _duplicated_stack()
    reference = copy.deepcopy(model)
    x = torch.randn(8, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    test = torch.randn(5, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    graph = ModelGraph(model, x[:1])
    graph.remove("a", [5])
    with torch.no_grad():
        before = (model(test) - reference(test)).abs().max()
    done = reconstruct(graph, reference, [(x[:4], None), (x[4:], None)], ridge=1e-12)
    assert done == ["b"]  # the layer whose input lost a channel
    with torch.no_grad():
        after = (model(test) - reference(test)).abs().max()
        folded = reference.b.weight[:, 2] + reference.b.weight[:, 5]
    assert before > 1e-2 and after < 1e-8  # on images it never saw
    assert torch.allclose(model.b.weight[:, 2], folded, atol=1e-8)


def test_reconstruction_reduces_the_output_error_of_a_real_removal():
    torch.manual_seed(0)
    model = TwoRes(8).double().eval()
    reference = copy.deepcopy(model)
    x = torch.randn(16, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    graph = ModelGraph(model, x[:1])
    graph.remove("conv1", [0, 3])
    graph.remove("stem", [6])
    with torch.no_grad():
        before = (model(x) - reference(x)).pow(2).mean()
    done = reconstruct(graph, reference, [(x, None)])
    assert set(done) == {"conv1", "conv2", "down"}  # every dense consumer whose input shrank, in execution order
    assert done.index("conv1") < done.index("conv2") < done.index("down")
    with torch.no_grad():
        after = (model(x) - reference(x)).pow(2).mean()
    assert after < 0.5 * before


def test_survivors_follow_the_removal_through_every_layer():
    model = TwoRes(8).eval()
    s = surviving(model, torch.randn(1, 3, 16, 16), {"stem": [1, 2], "conv1": [0]})
    assert s["stem"].out == [0, 3, 4, 5, 6, 7] and s["stem"].inp == [0, 1, 2]
    assert s["conv1"].inp == [0, 3, 4, 5, 6, 7] and s["conv1"].out == [1, 2, 3, 4, 5, 6, 7]
    assert s["conv2"].inp == [1, 2, 3, 4, 5, 6, 7] and s["conv2"].out == [0, 3, 4, 5, 6, 7]
    assert model.stem.weight.shape[0] == 8  # the model itself untouched
