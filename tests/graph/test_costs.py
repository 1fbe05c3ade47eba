import random

import pytest
import torch
import torchvision

from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from tests.models import TwoRes


def test_measure_counts_conv_and_linear_macs():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    c = measure(m, torch.randn(1, 3, 8, 8))
    assert c.macs == 4 * 3 * 9 * 64 + 256 * 10
    assert c.params == 4 * 3 * 9 + 256 * 10 + 10
    # conv output + the linear's output (flatten is a view, not counted)
    assert c.activation_bytes == (4 * 64 + 10) * 4


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: TwoRes(), (1, 3, 16, 16)),
        (lambda: torchvision.models.mobilenet_v2(width_mult=0.5), (1, 3, 64, 64)),
        (lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16), (1, 3, 64, 64)),
    ],
    ids=["twores", "mobilenet_v2", "densenet"],
)
def test_cost_model_predicts_measured_costs_after_random_pruning(make, shape):
    model = make().eval()
    x = torch.randn(shape)
    graph = ModelGraph(model, x)
    cm = CostModel(graph)
    assert cm.predict() == cm.base
    rnd = random.Random(0)
    for g in graph.prunable():
        graph.remove(g.id, rnd.sample(g.kept, rnd.randint(0, g.channels // 2)))
    measured, predicted = measure(model, x), cm.predict()
    assert predicted.macs == measured.macs
    assert predicted.params == measured.params
    assert predicted.activation_bytes == pytest.approx(measured.activation_bytes, rel=0.03)


def test_saving_matches_the_difference_of_predictions():
    graph = ModelGraph(TwoRes().eval(), torch.randn(1, 3, 16, 16))
    cm = CostModel(graph)
    w = cm.widths()
    gi = cm.index["stem"]
    w2 = list(w)
    w2[gi] -= 3
    s = cm.saving(gi, 3, w)
    assert s["macs"] == pytest.approx(cm.predict(w).macs - cm.predict(w2).macs)
    assert s["params"] == pytest.approx(cm.predict(w).params - cm.predict(w2).params)
    assert s["memory"] == pytest.approx(cm.predict(w).activation_bytes - cm.predict(w2).activation_bytes)


def test_a_saving_is_what_the_prediction_loses():
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16).eval()
    cm = CostModel(ModelGraph(model, torch.randn(1, 3, 64, 64)))
    rnd = random.Random(1)
    w = [rnd.randint(max(1, f // 2), f) for f in cm.full]
    for gi in rnd.sample(range(len(w)), 6):
        k = 1 + rnd.randrange(w[gi] - 1) if w[gi] > 1 else 0
        saving, before = cm.saving(gi, k, w), cm.predict(w)
        after = cm.predict([*w[:gi], w[gi] - k, *w[gi + 1:]])
        assert set(saving) == {"macs", "params", "memory"}
        assert saving["macs"] == pytest.approx(before.macs - after.macs, abs=1)
        assert saving["params"] == pytest.approx(before.params - after.params, abs=1)
        assert saving["memory"] == pytest.approx(before.activation_bytes - after.activation_bytes, abs=1)
