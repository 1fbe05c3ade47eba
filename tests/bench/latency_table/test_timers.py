"""Single-layer and whole-model graphs with external weights, and how many runs a measurement takes."""

from __future__ import annotations

import collections
import time

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.bench.latency_table.layers import LayerOp, input_shape, model_graph, onnx_layer
from deploykit.bench.latency_table.profile import Profiler
from deploykit.bench.latency_table.timers import MIN_RUNS, TIMERS, OrtTimer, Timer, TimingConfig, kernel_ms, register_timer
from deploykit.export.onnx import onnx_bytes
from deploykit.export.session import ort_session
from tests.bench import nets
from tests.bench.conftest import SPEC, fake_config

CONV = LayerOp("conv", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, (9, 9), True)
DEPTHWISE = LayerOp("conv", (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, (7, 7), False)
LINEAR = LayerOp("linear", (), (), (), (), 0, (), True)


def torch_ref(op: LayerOp, x: torch.Tensor, w: dict[str, np.ndarray], cin: int) -> torch.Tensor:
    weight = torch.from_numpy(w["W"].copy())
    bias = torch.from_numpy(w["B"].copy()) if "B" in w else None
    if op.kind == "linear":
        return x @ weight + (bias if bias is not None else 0)
    return F.conv2d(x, weight, bias, stride=op.stride, padding=op.padding[:2], groups=op.groups(cin))


@pytest.mark.parametrize(("op", "cin", "cout"), [(CONV, 6, 10), (DEPTHWISE, 8, 8), (LINEAR, 12, 5)])
def test_a_layer_graph_computes_its_op_with_the_weights_given_alongside(op, cin, cout):
    layer = onnx_layer(op, cin, cout, batch=2)
    assert b"W" in layer.model and len(layer.model) < 2000  # the weights' data are not in the protobuf
    x = np.random.default_rng(1).standard_normal(input_shape(op, 2, cin)).astype(np.float32)
    got = ort_session(layer.model, 1, initializers=layer.weights).run(None, {"x": x})[0]
    want = torch_ref(op, torch.from_numpy(x), layer.weights, cin).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


class _Gather(nn.Module):
    """Channels picked by indices the exporter computes from an integer buffer (not a weight it can draw)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.register_buffer("idx", torch.tensor([5, 3, 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).index_select(1, self.idx - 1)


def _ops(model: bytes) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load_from_string(model).graph.node)


def test_a_model_graph_holds_no_weight_data_and_runs_the_module_own_weights():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    x = torch.randn(1, 3, 8, 8)
    graph = model_graph(plain, x)
    assert graph is not None and len(graph.model) < 2000 and set(graph.weights) == {n for n, _ in plain.named_parameters()}
    got = ort_session(graph.model, 1, initializers=graph.weights).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, plain(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_model_graph_draws_what_the_exporter_computed_and_keeps_the_graph():
    bn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 8, 8)
    graph = model_graph(bn, x)
    assert graph is not None
    assert any(n not in dict(bn.named_parameters()) for n in graph.weights)  # the BatchNorm folded into the conv
    assert _ops(graph.model) == _ops(onnx_bytes(bn, x))
    out = ort_session(graph.model, 1, initializers=graph.weights).run(None, {"input": x.numpy()})[0]
    assert out.shape == (1, 4) and np.isfinite(out).all()


def test_a_model_the_graph_cannot_supply_is_timed_from_its_complete_export():
    gather = _Gather().eval()
    x = torch.randn(1, 3, 8, 8)
    assert model_graph(gather, x) is None  # idx - 1 is an integer tensor the exporter computed
    fn = OrtTimer(TimingConfig(runs=2, warmup=1)).model_fn(gather, x)
    assert fn()[0].shape == (1, 3, 6, 6)


def test_the_ort_timer_times_a_layer():
    assert OrtTimer(TimingConfig(runs=3)).layer_ms(CONV, 6, 10) > 0


def test_slow_layers_get_fewer_runs_within_the_bounds():
    timer = Timer(TimingConfig(runs=10, budget_ms=60))
    assert timer.runs_for(0.001) == 10  # fast: the configured runs
    assert timer.runs_for(0.01) == 6
    assert timer.runs_for(1.0) == MIN_RUNS  # never below the floor
    assert Timer(TimingConfig(runs=2)).runs_for(1.0) == 2  # nor above what the user asked for


class _SlowModels(nets.FakeTimer):
    """Whole models take 20 ms a call; records the rounds the calibration asks for."""

    name = "fake-slow"
    asked: list[int] = []

    def model_fn(self, module, example):
        return lambda: time.sleep(0.02)

    def time_models(self, fns, runs, warmup, task=None):
        type(self).asked.append(runs)
        if task is not None:
            task.advance(runs)
        return {k: [0.02] * runs for k in fns}


if _SlowModels.name not in TIMERS:
    register_timer(_SlowModels.name, _SlowModels)


@pytest.mark.parametrize(("budget", "rounds"), [(0.1, 5), (1000.0, 30)])
def test_calibration_rounds_shrink_for_a_slow_model_within_the_bounds(cost_model, budget, rounds):
    _SlowModels.asked = []
    cfg = fake_config(_SlowModels.name, scan=0, calibration_runs=30, calibration_budget_s=budget, cache=False)
    Profiler(cost_model, SPEC, cfg).run()
    assert _SlowModels.asked == [rounds]  # one pass: at least 5 rounds, at most calibration_runs


class _Steps:
    """A progress task that counts its steps."""

    def __init__(self) -> None:
        self.n = 0

    def advance(self, n: int = 1, status: str | None = None) -> None:
        self.n += n


@pytest.mark.parametrize(("budget", "rounds"), [(0.1, 10), (1000.0, 30)])
def test_a_latency_check_of_a_slow_model_takes_fewer_rounds_and_fills_its_bar(budget, rounds):
    from deploykit.bench.latency_check import LatencyCheck

    _SlowModels.asked = []
    timer = _SlowModels(TimingConfig())
    check = LatencyCheck(timer, timer.model_fn(None, None), torch.zeros(1, 3, 8, 8), runs=30, budget_s=budget)
    steps = _Steps()
    assert check.ratio(torch.nn.Identity(), steps) == pytest.approx(1.0)
    assert _SlowModels.asked == [rounds] and steps.n == 30  # at least min_runs; the bar ends full


def _event(node: str, ms: float) -> dict:
    return {"cat": "Node", "name": f"{node}_kernel_time", "dur": ms * 1e3, "args": {"op_name": "Conv"}}


def test_kernel_time_is_the_sum_of_node_medians_per_block_of_runs():
    # two nodes, one warm-up run, then two blocks of three runs; the second block ran under load
    a = [9.0, 1.0, 1.2, 1.1, 2.0, 2.2, 2.1]
    b = [5.0, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9]
    events = [e for x, y in zip(a, b) for e in (_event("a", x), _event("b", y))]
    events.append({"cat": "Node", "name": "r_kernel_time", "dur": 7e3, "args": {"op_name": "ReorderInput"}})
    assert kernel_ms(events, 1, 2) == pytest.approx([1.6, 3.0])
    assert kernel_ms(events, 1) == pytest.approx([1.6 + 0.7])  # one block: the medians of all six runs


class _Counting(nets.FakeTimer):
    """Counts the calls of each kind of layer measurement."""

    name = "fake-counting"
    calls: collections.Counter = collections.Counter()

    def layer_ms(self, op, cin, cout):
        type(self).calls["single"] += 1
        return super().layer_ms(op, cin, cout)

    def layer_ms_passes(self, op, cin, cout, passes):
        type(self).calls[f"passes={passes}"] += 1
        return nets.smooth_ms(op, cin, cout)


if _Counting.name not in TIMERS:
    register_timer(_Counting.name, _Counting)


def test_a_heavy_point_takes_its_passes_on_one_built_layer(cost_model):
    _Counting.calls = collections.Counter()
    prof = Profiler(cost_model, SPEC, fake_config(_Counting.name, passes=3, cache=False))
    big = 8192 * 4096  # 134 MB of float32 weights
    assert LINEAR.weight_count(8192, 4096) == big and CONV.weight_count(6, 10) == 6 * 10 * 9
    prof.measure_all([(LINEAR, 8192, 4096), (CONV, 6, 10), (CONV, 6, 12)], "test")
    assert _Counting.calls == {"passes=3": 1, "single": 6}  # the two light points once a pass
    assert prof.measure(LINEAR, 8192, 4096) == pytest.approx(nets.smooth_ms(LINEAR, 8192, 4096))


def test_the_ort_timer_takes_passes_on_one_session():
    ms = OrtTimer(TimingConfig(runs=3)).layer_ms_passes(CONV, 6, 10, 2)
    assert ms > 0
