"""A tiny model with every layer kind a latency table handles, and fake timers with known latency."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.bench.latency_table.layers import LayerOp, record_calls
from deploykit.bench.latency_table.timers import TIMERS, Timer, register_timer
from deploykit.graph.costs import measure

INPUT_SHAPE = (1, 3, 16, 16)


class Tiny(nn.Module):
    """stem → depthwise → pointwise → residual block → linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pw = nn.Conv2d(16, 24, 1, bias=False)
        self.conv1 = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(24, 24, 3, padding=1, bias=False)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.dw(x))
        x = F.relu(self.pw(x))
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def tiny() -> nn.Module:
    """Factory for the ``tests.bench.nets:tiny`` spec."""
    torch.manual_seed(0)
    return Tiny().eval()


tiny.input_shape = INPUT_SHAPE  # type: ignore[attr-defined]

# End-to-end latency of the fake backends: Σ layers + FIXED_MS + PER_MB × activation MB.
FIXED_MS = 0.5
PER_MB = 0.2


def smooth_ms(op: LayerOp, cin: int, cout: int) -> float:
    """Bilinear in (cin, cout): a table interpolates it exactly."""
    return 0.01 + 1e-5 * op.macs(cin, cout)


def stair_ms(op: LayerOp, cin: int, cout: int) -> float:
    """A backend computing channels in blocks of 8: a staircase in both channel counts."""
    up = lambda c: 8 * math.ceil(c / 8)  # noqa: E731
    ci = cin if op.in_per_group == 1 else up(cin)  # depthwise: one channel per group, blocks follow cout
    return 0.01 + 1e-5 * op.macs(ci, up(cout))


class _Run:
    def __init__(self, ms: float) -> None:
        self.ms = ms

    def __call__(self) -> None:
        return None


class FakeTimer(Timer):
    """Layer latency from :attr:`fn`; whole models from the same plus fixed and per-MB terms."""

    name = "fake"
    fn = staticmethod(smooth_ms)
    layer_calls = 0

    def device(self) -> str:
        return "fake device"

    def runtime(self) -> str:
        return "fake 1.0"

    def layer_ms(self, op: LayerOp, cin: int, cout: int) -> float:
        type(self).layer_calls += 1
        return type(self).fn(op, cin, cout)

    def model_fn(self, module: nn.Module, example: torch.Tensor) -> _Run:
        return _Run(model_ms(module, example, type(self).fn))

    def time_models(self, fns, runs, warmup, task=None):
        return {k: [f.ms / 1e3] * runs for k, f in fns.items()}


class StairTimer(FakeTimer):
    """The staircase backend."""

    name = "fake-stair"
    fn = staticmethod(stair_ms)


class FlatTimer(FakeTimer):
    """A backend whose layers cost the same at every width (a wide layer's top few channels)."""

    name = "fake-flat"
    fn = staticmethod(lambda op, cin, cout: 1.0)


def model_ms(module: nn.Module, example: torch.Tensor, fn=smooth_ms) -> float:
    """The fake backends' end-to-end latency of ``module``."""
    layers = sum(fn(c.op, c.cin, c.cout) for c in record_calls(module, example))
    return layers + FIXED_MS + PER_MB * measure(module, example).activation_bytes / 1e6


for _cls in (FakeTimer, StairTimer, FlatTimer):
    if _cls.name not in TIMERS:
        register_timer(_cls.name, _cls)
