"""taylor, fpgm, bn_scale, random: Torch-Pruning's importances on deploykit groups."""

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp

from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from tests.models import TwoRes, randomize_bn


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = randomize_bn(TwoRes(8))
    x = torch.randn(6, 3, 16, 16)
    y = torch.randint(0, 5, (6,))
    graph = ModelGraph(model, x[:1])
    return model, graph, x, y


@pytest.mark.parametrize("name, imp", [
    ("fpgm", lambda: tp.importance.FPGMImportance(normalizer=None)),
    ("bn_scale", lambda: tp.importance.BNScaleImportance(normalizer=None)),
])
def test_passive_wrappers_equal_torch_pruning(setup, name, imp):
    model, graph, _, _ = setup
    s = score_groups(get_criterion(name), ScoringContext(model, graph))
    for g in graph.prunable():
        ref = imp()(graph.tp_group(g))
        if ref is None:  # Torch-Pruning has nothing to score (no BatchNorm in the group): all equal
            assert torch.equal(s[g.id], torch.zeros(g.channels))
        else:
            assert torch.allclose(s[g.id].double(), ref.double(), atol=1e-6), g.id


def test_bn_scale_ranks_a_small_gamma_last(setup):
    model, graph, _, _ = setup
    with torch.no_grad():
        model.bn1.weight[5] = 1e-4  # block-internal group conv1 -> bn1
    s = score_groups(get_criterion("bn_scale"), ScoringContext(model, graph))
    assert int(s["conv1"].argmin()) == 5


def test_taylor_is_torch_pruning_on_the_summed_calibration_gradient(setup):
    model, graph, x, y = setup
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    s = score_groups(get_criterion("taylor"), ScoringContext(model, graph), batches)
    # Reference: one backward pass of the summed loss over both batches, then Torch-Pruning's own importance.
    model.zero_grad()
    model.eval()
    F.cross_entropy(model(x), y, reduction="sum").backward()
    ref = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
    for g in graph.prunable():
        assert torch.allclose(s[g.id].double(), ref(graph.tp_group(g)).double(), rtol=1e-4, atol=1e-6), g.id
    # Scoring left no gradients behind in the model.
    model.zero_grad(set_to_none=True)
    score_groups(get_criterion("taylor"), ScoringContext(model, graph), batches)
    assert all(p.grad is None for p in model.parameters())


def test_random_follows_the_seed(setup):
    model, graph, _, _ = setup
    ctx = ScoringContext(model, graph)
    torch.manual_seed(7)
    a = score_groups(get_criterion("random"), ctx)
    torch.manual_seed(7)
    b = score_groups(get_criterion("random"), ctx)
    torch.manual_seed(8)
    c = score_groups(get_criterion("random"), ctx)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
