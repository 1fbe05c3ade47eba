"""Group Fisher fed by training steps, and its cost normalization."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion, score_groups
from deploykit.select import SelectConfig, Target, select_global
from deploykit.train.loop import Trainer, TrainConfig
from tests.models import TwoRes, randomize_bn


class Plain(nn.Module):
    """No BatchNorm: train and eval mode compute the same function, so per-sample gradients are well defined."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.mid = nn.Conv2d(6, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.mid(x)) + x
        x = torch.relu(self.down(x))
        return self.head(x.mean((2, 3)))


def test_training_step_observation_equals_a_calibration_pass():
    torch.manual_seed(0)
    model = Plain().double()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (6,))
    graph = ModelGraph(model, x[:1])
    ctx = ScoringContext(model, graph)
    ref = score_groups(get_criterion("fisher"), ctx, [(x, y)])

    fisher = get_criterion("fisher")
    trainer = Trainer(model, TrainConfig(lr=0.1))
    # The training loss is a batch mean: scale by the batch size to get per-sample gradients.
    trainer.step(x, y, lr=0.1, observe=fisher.observe(ctx, scale=6.0))
    got = {g.id: fisher.score(g, ctx) for g in graph.prunable()}
    assert set(got) == set(ref) and len(got) >= 2
    for gid in ref:
        assert torch.allclose(got[gid].double(), ref[gid].double(), rtol=1e-6, atol=1e-12), gid
    # The observation read the gradients at the weights before the update; the update still happened.
    assert not torch.equal(score_groups(get_criterion("fisher"), ctx, [(x, y)])["stem"], ref["stem"])


def test_evaluation_inside_an_observed_block_adds_nothing():
    torch.manual_seed(0)
    model = Plain()
    graph = ModelGraph(model, torch.randn(1, 3, 8, 8))
    ctx = ScoringContext(model, graph)
    fisher = get_criterion("fisher")
    with fisher.observe(ctx, scale=1.0), torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert all(float(fisher.score(g, ctx).sum()) == 0.0 for g in graph.prunable())


def test_state_dict_round_trip_and_reset():
    torch.manual_seed(0)
    model = Plain()
    graph = ModelGraph(model, torch.randn(1, 3, 8, 8))
    ctx = ScoringContext(model, graph)
    f = get_criterion("fisher")
    f.accumulate(ctx, (torch.randn(3, 3, 8, 8), torch.randint(0, 4, (3,))))
    g = get_criterion("fisher")
    g.load_state_dict(f.state_dict())
    for grp in graph.prunable():
        assert torch.equal(f.score(grp, ctx), g.score(grp, ctx))
    f.reset()
    assert f.state_dict() == {}


@pytest.fixture
def two_res():
    torch.manual_seed(0)
    model = randomize_bn(TwoRes())
    graph = ModelGraph(model, torch.randn(1, 3, 16, 16))
    return model, graph, CostModel(graph)


def _first_choice(cost_model, scores, normalize):
    cfg = SelectConfig([Target("macs", 0.01)], normalize=normalize, max_chunks=1)
    sel = select_global(cost_model, scores, cfg, comparable=True)
    assert len(sel.remove) == 1 and len(next(iter(sel.remove.values()))) == 1
    return next(iter(sel.remove))


def test_memory_normalization_prefers_the_high_resolution_channel(two_res):
    model, graph, cost_model = two_res
    hi, lo = cost_model.index["conv1"], cost_model.index["down"]  # 16x16 block-internal vs 8x8 after a stride-2 conv
    w = cost_model.widths()
    assert cost_model.saving(hi, 1, w)["memory"] > cost_model.saving(lo, 1, w)["memory"]
    fisher = get_criterion("fisher")
    fisher.load_state_dict({"conv1": torch.ones(8, dtype=torch.float64), "down": torch.ones(16, dtype=torch.float64)})
    ctx = ScoringContext(model, graph)
    scores = {gid: fisher.score(graph.get(gid), ctx) for gid in ("conv1", "down")}
    assert _first_choice(cost_model, scores, "memory") == "conv1"
    # It is the ratio that decides: a low-resolution channel that matters far less goes first.
    ratio = cost_model.saving(lo, 1, w)["memory"] / cost_model.saving(hi, 1, w)["memory"]
    scores["down"] = torch.full((16,), 0.5 * ratio, dtype=torch.float64)
    assert _first_choice(cost_model, scores, "memory") == "down"
    # Unnormalized, the cheaper score wins whatever the resolution.
    assert _first_choice(cost_model, scores, "none") == "down"
    scores["down"] = torch.full((16,), 2.0 * ratio, dtype=torch.float64)
    assert _first_choice(cost_model, scores, "memory") == "conv1"


def test_costs_are_recomputed_as_neighbours_shrink(two_res):
    _, graph, cost_model = two_res
    w = cost_model.widths()
    before = cost_model.saving(cost_model.index["conv1"], 1, w)["macs"]
    w[cost_model.index["stem"]] -= 4  # conv1's input shrinks: each of its channels now costs fewer MACs
    assert cost_model.saving(cost_model.index["conv1"], 1, w)["macs"] < before


def test_resnet20_residual_stream_fisher_includes_the_option_a_shortcut():
    """The stage-1 stream is read by every stage-1 block, stage 2's first conv and its option-A shortcut."""
    from deploykit.zoo import build_model
    from tests.importance.test_fisher import _literal_mask_grad

    torch.manual_seed(0)
    model = randomize_bn(build_model("cifar:resnet20", pretrained=False).model).double()
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    graph = ModelGraph(model, x[:1].float().double())
    scores = score_groups(get_criterion("fisher"), ScoringContext(model, graph), [(x, y)])
    mods = dict(model.named_modules())
    consumers = [mods[n] for n in ("layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.0.shortcut")]
    for c in (0, 7, 15):
        g = _literal_mask_grad(model, consumers, c, x, y, eps=1e-7)  # small: many ReLU kinks nearby
        assert torch.allclose(scores["conv1"][c].double(), 0.5 * (g**2).sum(), rtol=1e-4, atol=1e-12), c
    # Leaving the shortcut out would be measurably wrong.
    g = _literal_mask_grad(model, consumers[:-1], 7, x, y, eps=1e-7)
    assert not torch.allclose(scores["conv1"][7].double(), 0.5 * (g**2).sum(), rtol=1e-3)
