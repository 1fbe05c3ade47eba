"""The Group Fisher math against brute force."""

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from tests.models import TwoRes, randomize_bn


def _literal_mask_grad(model, consumers, channel, x, y, eps=1e-4):
    """∂L_n/∂m_c by central differences, m_c scaling the channel at every consumer's input."""

    def loss_with(scale):
        def hook(mod, args):
            inp = args[0].clone()
            inp[:, channel] *= scale
            return (inp,)

        hs = [c.register_forward_pre_hook(hook) for c in consumers]
        try:
            return F.cross_entropy(model(x), y, reduction="none")
        finally:
            for h in hs:
                h.remove()

    with torch.no_grad():
        return (loss_with(1 + eps) - loss_with(1 - eps)) / (2 * eps)


def test_fisher_matches_brute_force_per_sample_mask_gradients():
    torch.manual_seed(0)
    model = randomize_bn(TwoRes()).double()
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    graph = ModelGraph(model, x[:1])
    crit = get_criterion("fisher")
    scores = score_groups(crit, ScoringContext(model, graph), [(x[:3], y[:3]), (x[3:], y[3:])])
    for gid, consumers in (("stem", [model.conv1, model.down]), ("conv1", [model.conv2]), ("down", [model.head])):
        for c in range(scores[gid].numel()):
            g = _literal_mask_grad(model, consumers, c, x, y)
            assert torch.allclose(scores[gid][c].double(), 0.5 * (g**2).sum(), rtol=1e-4, atol=1e-10), (gid, c)


class Cancelling(nn.Module):
    """The stem's channels feed two identical branches that are subtracted: removing one changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 6, 3, padding=1)
        self.b = nn.Conv2d(4, 6, 3, padding=1)
        self.b.load_state_dict(self.a.state_dict())
        self.r = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        z = self.a(h) - self.b(h) + self.r(x)
        return self.head(z.mean((2, 3)))


def test_group_sums_before_squaring():
    torch.manual_seed(1)
    model = Cancelling().double().eval()
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    graph = ModelGraph(model, x[:1])
    scores = score_groups(get_criterion("fisher"), ScoringContext(model, graph), [(x, y)])
    # Each branch alone sees a real gradient; squared per site they would not cancel.
    per_site = 0.5 * (_literal_mask_grad(model, [model.a], 0, x, y) ** 2).sum()
    assert per_site > 1e-6
    assert scores["stem"].abs().max() < 1e-12 * max(1.0, float(per_site))
