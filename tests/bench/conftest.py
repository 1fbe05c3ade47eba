"""Fixtures: the tiny model's graph and cost model, and latency tables measured on the fake backends."""

from __future__ import annotations

import pytest

from deploykit.bench.latency_table.profile import ProfileConfig, Profiler
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.zoo import build_model
from tests.bench import nets

SPEC = "tests.bench.nets:tiny"


def fake_config(backend: str = "fake", scan: int = 16, **kw) -> ProfileConfig:
    """Few points, one pass: the fake backends are exact."""
    settings = {"grid": 4, "passes": 1, "calibration": (1.0, 0.7, 0.4), "calibration_runs": 3, **kw}
    return ProfileConfig(backend=backend, scan=scan, **settings)


@pytest.fixture()
def cost_model() -> CostModel:
    built = build_model(SPEC)
    return CostModel(ModelGraph(built.traced, built.example_input()))


@pytest.fixture()
def smooth_lut(cost_model):
    return Profiler(cost_model, SPEC, fake_config(scan=0)).run()


@pytest.fixture()
def stair_lut(cost_model):
    nets.StairTimer.layer_calls = 0
    return Profiler(cost_model, SPEC, fake_config("fake-stair")).run()
