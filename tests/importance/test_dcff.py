"""dcff: proxies, the KL criterion, fusion and the gradient that reaches every original filter."""

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from deploykit.importance.dcff import fuse, kl_scores, proxies
from deploykit.train.dcff import Fusion
from deploykit.train.distributed import Dist
from deploykit.train.job import PruneState
from tests.importance.nets import Stack


def test_fused_filters_approach_the_kept_originals_as_t_grows():
    bank = torch.randn(10, 4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kept = [0, 3, 4, 8]
    dist = []
    for t in (0.5, 1, 2, 5, 10, 20, 50, 100):
        fused = fuse(bank, proxies(bank, t)[kept])
        dist.append(float((fused - bank[kept]).norm() / bank[kept].norm()))
    assert all(b < a for a, b in zip(dist, dist[1:]))  # strictly closer as t grows
    assert dist[0] > 0.5 and dist[-1] < 1e-12  # near uniform mixing at first, the originals at the end


def test_proxies_are_distributions_peaked_on_the_filter_itself():
    bank = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    p = proxies(bank, 3.0)
    assert torch.allclose(p.sum(1), torch.ones(6, dtype=torch.float64))
    assert (p.argmax(1) == torch.arange(6)).all()


def test_kl_criterion_ranks_redundant_filters_below_distinct_ones():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 12, generator=g)
    near = base + 0.01 * torch.randn(3, 12, generator=g)  # three near-copies of one filter
    far = 3.0 * torch.randn(3, 12, generator=g)  # three filters unlike anything else
    s = kl_scores(proxies(torch.cat([near, far]), 5.0))
    assert s[:3].max() < s[3:].min()


def _job(model, graph, x):
    return SimpleNamespace(model=model, graph=graph, scoring=ScoringContext(model, graph), trainer=None, dist=Dist(),
                           state=PruneState(), cost_model=CostModel(graph))


def test_fusion_is_compact_and_sends_the_gradient_to_every_original_filter():
    model = Stack(width=8).double().eval()
    x = torch.randn(4, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0])
    graph = ModelGraph(model, x[:1])
    bank0 = model.a.weight.detach().clone()
    t = 5.0
    removal = {"a": [1, 5, 6]}
    fusion = Fusion.install(_job(model, graph, x), removal, t)
    assert model.a.weight.shape[0] == 5 and model.b.weight.shape[1] == 5  # physically compact
    kept = [0, 2, 3, 4, 7]
    (prod,) = fusion.layers
    assert torch.allclose(prod.bank, bank0)  # all 8 original filters stay as the bank
    assert torch.allclose(model.a.weight, fuse(bank0, proxies(bank0, t)[kept]))
    # One step: the bank's gradient equals autograd's through the explicit fusion.
    with fusion.step():
        F.cross_entropy(model(x), y).backward()
    bank = bank0.clone().requires_grad_(True)
    w = fuse(bank, proxies(bank0, t)[kept])
    h = torch.relu(F.conv2d(x, w, padding=1))
    out = model.head(torch.relu(model.b(h)).mean((2, 3)))
    F.cross_entropy(out, y).backward()
    assert torch.allclose(prod.bank.grad, bank.grad, atol=1e-12)
    assert (prod.bank.grad[[1, 5, 6]].abs().sum((1, 2, 3)) > 0).all()  # removed filters keep learning
    assert model.a.weight.grad is None
    # At t = ∞ the kept slots hold their own filters.
    fusion.update(1e4)
    assert torch.allclose(model.a.weight, prod.bank[kept].detach())


def test_dcff_criterion_scores_without_data_and_names_its_schedule():
    model = Stack(width=8).eval()
    graph = ModelGraph(model, torch.randn(1, 4, 8, 8))
    crit = get_criterion("dcff")
    assert not crit.requires_data and crit.schedule == "dcff"
    s = score_groups(crit, ScoringContext(model, graph))
    expected = kl_scores(proxies(model.a.weight, crit.t_start))
    assert torch.allclose(s["a"].double(), expected / expected.max(), atol=1e-6)
    assert crit.temperature(0, 100) == crit.t_start and crit.temperature(100, 100) == crit.t_end
    assert crit.temperature(0, 0) == crit.t_end  # no budget: choose at the end temperature
