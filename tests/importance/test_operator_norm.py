"""operator_norm: a filter's share of the layer's operator norms, not its entry-wise norm."""

import torch
from torch import nn

from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from deploykit.importance.operator_norm import filter_scores


def _layer(seed: int = 0) -> torch.Tensor:
    """8 filters of 4 channels x 3x3: most act along one kernel direction v; filters 6 and 7 are the test pair.

    Filter 6 lies along v (a rank-1 filter: spectral norm = Frobenius norm); filter 7 spreads the same
    Frobenius norm over kernel directions orthogonal to v (small spectral norm). Equal entry-wise L2 norms.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(9)
    v[4] = 1.0  # the dominant kernel direction: the centre tap
    w = torch.zeros(8, 4, 9, dtype=torch.float64)
    for i in range(6):
        w[i] = torch.outer(torch.randn(4, generator=g, dtype=torch.float64), v)
    a = torch.ones(4, dtype=torch.float64)
    w[6] = torch.outer(a, v)
    spread = torch.zeros(4, 9, dtype=torch.float64)
    for c, tap in enumerate((0, 2, 6, 8)):  # each channel on a different corner tap: orthogonal to v
        spread[c, tap] = 1.0
    w[7] = spread
    return w.reshape(8, 4, 3, 3)


def test_spectral_beats_entrywise_at_equal_norm():
    w = _layer()
    f6, f7 = w[6].reshape(4, 9), w[7].reshape(4, 9)
    assert torch.isclose(f6.norm(), f7.norm())  # same entry-wise (Frobenius) norm
    assert torch.linalg.matrix_norm(f6, 2) > 1.9 * torch.linalg.matrix_norm(f7, 2)  # 2 vs 1
    s = filter_scores(w)
    assert s[7] < s[6]
    assert s[7] == s.min()  # it contributes least along the layer's dominant directions
    # The entry-wise criteria cannot tell the two apart.
    assert torch.isclose(w[6].abs().sum(), w[7].abs().sum()) and torch.isclose(w[6].norm(), w[7].norm())


def test_scores_are_shares_of_the_squared_operator_norms():
    w = torch.randn(10, 3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = w.reshape(10, 3, 9).permute(1, 0, 2)
    centred = a - a.mean(1, keepdim=True)
    sigma1 = torch.linalg.matrix_norm(centred, 2)  # [channels]
    assert torch.allclose(filter_scores(w).sum(), sigma1.pow(2).sum())


def test_permuting_filters_permutes_scores():
    w = torch.randn(12, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(filter_scores(w)[perm], filter_scores(w[perm]), rtol=1e-6, atol=1e-9)


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.b = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x))).mean((2, 3)))


def test_criterion_scores_the_producing_layer_without_data():
    model = Stack().eval()
    with torch.no_grad():
        model.a.weight.copy_(_layer().float())
    graph = ModelGraph(model, torch.randn(1, 4, 8, 8))
    crit = get_criterion("operator_norm")
    assert not crit.requires_data
    s = score_groups(crit, ScoringContext(model, graph))
    expected = filter_scores(model.a.weight)
    assert torch.allclose(s["a"].double(), (expected / expected.max()).float().double(), atol=1e-6)
    assert int(s["a"].argmin()) == 7
