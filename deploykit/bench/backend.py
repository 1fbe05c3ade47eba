"""Latency of any Runner backend (torch, ort, trt), measured like the ONNX Runtime bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.bench.latency import LatencyResult, interleaved, summarize
from deploykit.progress import Reporter


def bench_backend(paths: list[str | Path], batches: list[int], backend: str, runs: int = 100, warmup: int = 10,
                  reporter: Reporter | None = None, seed: int = 0) -> list[LatencyResult]:
    """Time ``runner.infer`` of each model at each batch size, models interleaved."""
    from deploykit.runtime.base import load_runner

    rep = reporter or Reporter()
    runners = {str(p): load_runner(p, backend=backend).activate() for p in paths}
    rng = np.random.default_rng(seed)
    results = []
    try:
        for b in batches:
            fns = {}
            for name, r in runners.items():
                feed = {m.name: rng.standard_normal(tuple(b if d is None else d for d in m.shape)).astype(m.dtype)
                        for m in r.get_input_metadata().values()}
                fns[name] = lambda r=r, f=feed: r.infer(f)
            with rep.task(f"batch {b} ({backend})", runs) as task:
                times = interleaved(fns, runs, warmup, task)
            results += [summarize(name, b, t) for name, t in times.items()]
    finally:
        for r in runners.values():
            r.deactivate()
    return results
