"""ensemble and lasso on constructed cases: exact additive effects, channels nothing uses."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import Lasso as SkLasso

from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from deploykit.importance.ensemble import LinearEnsemble, ridge_fit
from deploykit.importance.features import group_grams
from deploykit.importance.lasso import Lasso, lasso_gram, lasso_path_order
from tests.importance.nets import Additive, Stack, negative_sum


def test_ridge_fit_recovers_a_linear_model():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(200, 7, generator=g) < 0.8).float()
    w = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.1, -0.3, 1.5], dtype=torch.float64)
    losses = 3.0 + masks.double() @ w
    assert torch.allclose(ridge_fit(masks, losses, 1e-9), w, atol=1e-6)


def test_ensemble_measures_each_channels_loss_contribution_in_an_additive_network():
    model = Additive().eval()
    x = torch.rand(8, 1, 6, 6)
    graph = ModelGraph(model, x[:1])
    ctx = ScoringContext(model, graph, loss_fn=negative_sum)
    s = score_groups(LinearEnsemble(samples=40, ridge=1e-9), ctx, [(x, torch.zeros(8, dtype=torch.long))])["a"]
    # Keeping channel c lowers the mean loss by contrib[c] * mean over samples of Σ a_c(x).
    with torch.no_grad():
        act = model.a(x).sum((2, 3)).mean(0).double()
    expected = torch.tensor(Additive.contrib, dtype=torch.float64) * act
    assert torch.allclose(s.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    assert int(s.argmin()) == 2  # the unused channel: no effect, ranked last


def test_ensemble_ranks_an_unused_channel_last_when_effects_are_not_additive():
    model = Additive().eval()
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    graph = ModelGraph(model, x[:1])

    def saturating(out, y):  # every used channel lowers it, by less and less: far from additive
        return F.softplus(3.0 - out.mean(1) / 20.0).sum()

    s = score_groups(get_criterion("ensemble"), ScoringContext(model, graph, loss_fn=saturating),
                     [(x, torch.zeros(8, dtype=torch.long))])["a"]
    assert int(s.argmin()) == 2
    assert (s[[0, 1, 3, 4, 5]] > 0).all()


def test_lasso_matches_sklearn_at_one_lambda():
    z = torch.randn(6, 300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gram = z @ z.T
    lam = 0.2 * 2 * float(gram.sum(1).abs().max())
    ours = lasso_gram(gram, lam, torch.zeros(6))
    x, y = z.T.numpy(), z.T.sum(1).numpy()  # ‖y − Xβ‖² + λ‖β‖₁  ==  sklearn's α = λ / (2n)
    ref = SkLasso(alpha=lam / (2 * len(y)), fit_intercept=False, tol=1e-14, max_iter=100_000).fit(x, y).coef_
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-8)


def test_lasso_path_admits_orthogonal_channels_by_energy():
    energy = torch.tensor([3.0, 0.5, 9.0, 1.0, 0.0], dtype=torch.float64)
    order = lasso_path_order(torch.diag(energy))
    assert torch.argsort(order).tolist() == [4, 1, 3, 0, 2]
    assert order[4] == 0  # a channel that contributes nothing never enters


def test_lasso_ranks_an_unused_channel_last():
    model = Stack(unused=5).eval()
    x = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    graph = ModelGraph(model, x[:1])
    crit = get_criterion("lasso")
    assert isinstance(crit, Lasso) and crit.default_recover == "reconstruct"
    s = score_groups(crit, ScoringContext(model, graph), [(x, torch.zeros(16, dtype=torch.long))])["a"]
    assert int(s.argmin()) == 5 and float(s[5]) == 0.0 and float(s.min(0).values) < float(s[s > 0].min())


@pytest.mark.parametrize("keep", [[0, 1, 2, 4, 6, 7], [1, 3, 5]])
def test_gram_quadratic_form_is_the_consumers_output_error(keep):
    """The Gram of sampled contributions gives the exact relative output error of any removal."""
    model = Stack().double().eval()
    x = torch.randn(4, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    graph = ModelGraph(model, x[:1])
    gram = group_grams(graph, [(x, None)], ["a"], positions=10_000)["a"]
    mask = torch.zeros(8, dtype=torch.float64)
    mask[keep] = 1.0
    with torch.no_grad():
        h = torch.relu(model.a(x))
        full, part = model.b(h), model.b(h * mask.view(1, -1, 1, 1))
    expected = (full - part).pow(2).sum() / full.pow(2).sum()
    assert torch.isclose(gram.removal_error(mask), expected, rtol=1e-9)
