"""The predictor's arithmetic on fake backends whose latency is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.bench.latency_table.file import Calibration
from deploykit.bench.latency_table.layers import record_calls
from deploykit.bench.latency_table.predictor import LatencyModel
from deploykit.bench.latency_table.variants import prune_to_widths, random_widths
from deploykit.graph.costs import Costs
from tests.bench import nets


def _variants(cost_model, n=5, seed=0):
    graph = cost_model.graph
    full = {g.id: g.channels for g in graph.prunable()}
    units = {g.id: g.atom_size for g in graph.prunable()}
    rng = np.random.default_rng(seed)
    for _ in range(n):
        by_id = random_widths(full, units, rng, low=0.2, round_to=1, keep_p=0.0)
        yield by_id, [by_id.get(g.id, g.channels) for g in cost_model.groups]


def test_prediction_is_the_calibrated_sum_of_the_tables_at_each_layers_channels(cost_model, smooth_lut):
    cal = Calibration(scale=1.3, fixed_ms=0.7, ms_per_mb=0.05, load=1.1)
    lm = LatencyModel(cost_model, smooth_lut.model_copy(update={"calibration": cal}))
    graph = cost_model.graph
    for by_id, w in _variants(cost_model):
        pruned = prune_to_widths(graph.model, graph.example_input, by_id)
        # the channels each layer really has in the pruned model, through the smooth (bilinear) fake latency
        layers = sum(nets.smooth_ms(c.op, c.cin, c.cout) for c in record_calls(pruned, graph.example_input))
        act_mb = cost_model.predict(w).activation_bytes / 1e6
        assert lm.predict(w) == pytest.approx(1.1 * (1.3 * layers + 0.7 + 0.05 * act_mb), rel=1e-6)


def test_calibration_recovers_the_backends_constants_and_predicts_whole_variants(cost_model, smooth_lut):
    cal = smooth_lut.calibration
    assert cal.scale == pytest.approx(1.0, abs=0.02) and cal.load == pytest.approx(1.0)
    assert cal.fixed_ms == pytest.approx(nets.FIXED_MS, rel=0.05) and cal.ms_per_mb == pytest.approx(nets.PER_MB, rel=0.1)
    lm = LatencyModel(cost_model, smooth_lut)
    graph = cost_model.graph
    assert lm.predict(cost_model.widths_full()) == pytest.approx(smooth_lut.base_ms, rel=0.01)
    for by_id, w in _variants(cost_model, seed=1):
        truth = nets.model_ms(prune_to_widths(graph.model, graph.example_input, by_id), graph.example_input)
        assert lm.predict(w) == pytest.approx(truth, rel=0.01)


def test_saving_is_the_predicted_difference(cost_model, smooth_lut):
    lm = LatencyModel(cost_model, smooth_lut)
    w = cost_model.widths_full()
    for gi, g in enumerate(cost_model.groups):
        if not g.prunable:
            continue
        w2 = list(w)
        w2[gi] -= 3
        assert lm.saving(gi, 3, w) == pytest.approx(lm.predict(w) - lm.predict(w2), rel=1e-9)
        assert lm.saving(gi, 3, w) > 0


def test_cost_model_carries_latency_only_once_a_table_is_attached(cost_model, smooth_lut):
    w = cost_model.widths_full()
    assert cost_model.predict().latency_ms is None and "latency" not in cost_model.saving(0, 1, w)
    assert "latency_ms" not in cost_model.base.to_dict()
    lm = LatencyModel(cost_model, smooth_lut)
    cost_model.attach_latency(lm)
    assert cost_model.base.latency_ms == pytest.approx(lm.predict(w))
    assert cost_model.saving(0, 1, w)["latency"] == pytest.approx(lm.saving(0, 1, w))
    w[0] -= 4
    now = cost_model.predict(w)
    assert now.ratio(cost_model.base)["latency_ms"] == pytest.approx(lm.predict(w) / lm.predict(cost_model.widths_full()))
    assert "latency_ms" not in Costs(1, 1, 1).ratio(cost_model.base)  # a measured model knows no latency


def test_a_width_inside_a_step_costs_what_the_step_above_costs(cost_model, stair_lut):
    lm = LatencyModel(cost_model, stair_lut)
    gi = next(i for i, g in enumerate(cost_model.groups) if g.id == "pw")  # 24 channels, blocks of 8
    assert stair_lut.groups["pw"].period == 8 and stair_lut.groups["pw"].ladder == [8, 16, 24]
    w = cost_model.widths_full()
    # the layers' part (activation memory still shrinks with every channel)
    at = lambda v: lm.layers_ms([v if i == gi else x for i, x in enumerate(w)])  # noqa: E731
    assert at(17) == pytest.approx(at(24)) and at(16) < at(17)
    assert at(9) == pytest.approx(at(16)) and at(8) < at(9)
