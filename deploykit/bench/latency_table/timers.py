"""How a backend times one layer, and runs a whole model, for latency tables.

A :class:`Timer` answers two questions on one backend: how long does this layer take
at these channel counts (:meth:`Timer.layer_ms`, the median of several runs), and a
callable that runs this whole model once (:meth:`Timer.model_fn`, for calibration and
checks, timed by the caller interleaved with others). A timer belongs to a backend of
:data:`deploykit.runtime.backends.BACKENDS`: :func:`register_timer` adds it there, and
:data:`TIMERS` lists the backends that have one.

ONNX Runtime's layer time is the kernel time from its own profiler, not the wall
time of a one-node session: ONNX Runtime wraps a lone convolution in layout
conversions (NCHW ↔ blocked NCHWc) that a whole network of convolutions does not
have between layers.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.bench.latency import budgeted, interleaved
from deploykit.bench.latency_table.layers import LayerOp, input_shape, model_graph, onnx_layer, torch_module
from deploykit.bench.machine import cpu_name
from deploykit.errors import DeployKitError
from deploykit.export.onnx import INPUT_NAME, onnx_bytes
from deploykit.export.session import ort_session
from deploykit.registry import View
from deploykit.runtime.backends import BACKENDS, Backend
from deploykit.runtime.torch import torch_threads


@dataclass(frozen=True)
class TimingConfig:
    """How layers and models are timed.

    Attributes:
        batch: batch size of every measurement.
        threads: intra-op threads (None: the runtime's default).
        runs: timed runs per layer measurement, at most (the median is kept): a layer whose
            warm-up run takes longer than ``budget_ms / runs`` gets fewer, never below
            :data:`MIN_RUNS`.
        warmup: untimed runs first.
        budget_ms: the time a layer measurement's timed runs aim at.
        precision: ``fp32`` (the backends here time float32 graphs).
    """

    batch: int = 1
    threads: int | None = 1
    runs: int = 10
    warmup: int = 2
    precision: str = "fp32"
    budget_ms: float = 60.0


# A median of three runs of a long kernel is as steady as one of ten short ones: the run-to-run
# spread is a fraction of the run, and a burst of load spoils one pass of a point, not the table.
MIN_RUNS = 3


class Timer:
    """One backend's timing of layers and models (subclasses implement the three methods)."""

    name = ""
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, cfg: TimingConfig) -> None:
        if cfg.precision not in self.precisions:
            raise DeployKitError(f"precision {cfg.precision!r} is not measured on backend {self.name}; "
                                 f"valid: {', '.join(self.precisions)}")
        self.cfg = cfg

    def device(self) -> str:
        """The device the numbers belong to."""
        return f"{cpu_name()} ({os.cpu_count()} cpus)"

    def runtime(self) -> str:
        """The runtime and its version."""
        raise NotImplementedError

    def layer_ms(self, op: LayerOp, cin: int, cout: int) -> float:
        """Median milliseconds of ``op`` at ``cin`` → ``cout`` channels."""
        raise NotImplementedError

    def layer_ms_passes(self, op: LayerOp, cin: int, cout: int, passes: int) -> float:
        """The least of ``passes`` measurements of one point taken back to back: for a point whose
        setup outweighs its runs (a backend may keep the layer built between them)."""
        return min(self.layer_ms(op, cin, cout) for _ in range(max(1, passes)))

    def runs_for(self, seconds: float) -> int:
        """Timed runs of a layer whose warm-up run took ``seconds``: ``runs``, fewer for a slow layer."""
        return budgeted(self.cfg.budget_ms / 1e3, seconds, MIN_RUNS, self.cfg.runs)

    def model_fn(self, module: nn.Module, example: torch.Tensor) -> Callable[[], object]:
        """A callable that runs ``module`` once on a batch of ``example``'s shape."""
        raise NotImplementedError

    def time_models(self, fns: dict, runs: int, warmup: int, task=None) -> dict[object, list[float]]:
        """Seconds per run of each :meth:`model_fn` callable, interleaved round-robin."""
        return interleaved(fns, runs, warmup, task)


# The backends with a timer: the runtime's backend registry, read for the facet this layer adds.
TIMERS: View[type[Timer]] = View("latency backend", BACKENDS, lambda b: b.timer)


def register_timer(name: str, cls: type[Timer] | None = None, description: str = "") -> Any:
    """Make ``cls`` the latency timer of backend ``name``; usable as a decorator without ``cls``.

    A name the runtime has no backend for becomes a backend that only times (a test's fake),
    described by ``description``.

    Raises:
        ValueError: ``name`` already has a timer.
    """

    def add(c: type[Timer]) -> type[Timer]:
        if name not in BACKENDS:
            BACKENDS.register(name, Backend(description))
        entry = BACKENDS.get(name)
        if entry.timer is not None:
            raise ValueError(f"latency backend {name!r} is registered twice")
        entry.timer = c
        return c

    return add if cls is None else add(cls)


def get_timer(backend: str, cfg: TimingConfig) -> Timer:
    """The registered timer of ``backend``."""
    return TIMERS.get(backend)(cfg)


@register_timer("ort")
class OrtTimer(Timer):
    """ONNX Runtime, CPU execution provider."""

    name = "ort"

    def runtime(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"

    def _session(self, model: bytes, profile_prefix: str | None = None, initializers: dict | None = None):
        return ort_session(model, self.cfg.threads, profile_prefix=profile_prefix, quiet=True, initializers=initializers)

    def layer_ms(self, op: LayerOp, cin: int, cout: int) -> float:
        return self.layer_ms_passes(op, cin, cout, 1)

    def layer_ms_passes(self, op: LayerOp, cin: int, cout: int, passes: int) -> float:
        # One session for every pass: building it (prepacking a VGG classifier's 400 MB of weights)
        # took 0.55-1.2 s against 0.13 s for the runs a point needs.
        cfg = self.cfg
        x = np.random.default_rng(0).standard_normal(input_shape(op, cfg.batch, cin)).astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            layer = onnx_layer(op, cin, cout, cfg.batch)
            sess = self._session(layer.model, str(Path(d) / "p"), layer.weights)
            n_warm = 0
            while n_warm < max(1, cfg.warmup):
                n_warm += 1
                t0 = time.perf_counter()
                sess.run(None, {"x": x})
                runs = self.runs_for(time.perf_counter() - t0)
                if runs <= MIN_RUNS:
                    break  # a slow layer is warm after one run
            for _ in range(runs * max(1, passes)):
                sess.run(None, {"x": x})
            events = json.loads(Path(sess.end_profiling()).read_text())
        return min(kernel_ms(events, n_warm, passes))

    def model_fn(self, module: nn.Module, example: torch.Tensor) -> Callable[[], object]:
        x = np.repeat(example[:1].numpy(), self.cfg.batch, axis=0)
        graph = model_graph(module, torch.from_numpy(x))
        sess = self._session(graph.model, initializers=graph.weights) if graph else self._session(
            onnx_bytes(module, torch.from_numpy(x)))
        return lambda: sess.run(None, {INPUT_NAME: x})


# Layout conversions a lone layer needs and a network of layers does not.
_LAYOUT_OPS = {"ReorderInput", "ReorderOutput"}


def kernel_ms(events: list[dict], warmup: int, blocks: int = 1) -> list[float]:
    """Per-run kernel milliseconds of the non-layout nodes in an ONNX Runtime profile: the sum
    over nodes of each node's median, one value for each of ``blocks`` equal runs of timed calls."""
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if e.get("args", {}).get("op_name") in _LAYOUT_OPS:
            continue
        per_node.setdefault(e["name"], []).append(float(e["dur"]) / 1e3)
    if not per_node:
        raise RuntimeError("ONNX Runtime's profile holds no kernel events")
    out = [0.0] * blocks
    for v in per_node.values():
        timed = v[warmup:] or v
        size = max(1, len(timed) // blocks)
        for b in range(blocks):
            out[b] += statistics.median(timed[b * size:(b + 1) * size] or timed)
    return out


@register_timer("torch")
class TorchTimer(Timer):
    """PyTorch eager on the CPU (or CUDA when ``DEPLOYKIT_TORCH_DEVICE=cuda``)."""

    name = "torch"

    def __init__(self, cfg: TimingConfig) -> None:
        super().__init__(cfg)
        self.dev = torch.device(os.environ.get("DEPLOYKIT_TORCH_DEVICE", "cpu"))

    def device(self) -> str:
        if self.dev.type == "cuda":
            return torch.cuda.get_device_name(self.dev)
        return super().device()

    def runtime(self) -> str:
        return f"torch {torch.__version__}"

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    @torch.no_grad()
    def layer_ms(self, op: LayerOp, cin: int, cout: int) -> float:
        cfg = self.cfg
        mod = torch_module(op, cin, cout).eval().to(self.dev)
        x = torch.randn(input_shape(op, cfg.batch, cin), device=self.dev)
        times = []
        with torch_threads(cfg.threads):
            for _ in range(max(1, cfg.warmup)):
                self._sync()
                t0 = time.perf_counter()
                mod(x)
                self._sync()
            for _ in range(self.runs_for(time.perf_counter() - t0)):
                t0 = time.perf_counter()
                mod(x)
                self._sync()
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    def model_fn(self, module: nn.Module, example: torch.Tensor) -> Callable[[], object]:
        module = module.eval().to(self.dev)
        x = example[:1].repeat(self.cfg.batch, *([1] * (example.dim() - 1))).to(self.dev)
        threads = self.cfg.threads

        @torch.no_grad()
        def run() -> object:
            with torch_threads(threads):
                out = module(x)
                self._sync()
                return out

        return run
