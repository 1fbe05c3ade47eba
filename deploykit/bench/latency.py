"""ONNX Runtime latency, several models interleaved so machine noise hits them alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.export.onnx import INPUT_NAME, ort_session
from deploykit.progress import Reporter, Task


@dataclass
class LatencyResult:
    """Latency statistics of one model at one batch size (milliseconds)."""

    model: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput: float  # images per second at the median

    def to_dict(self) -> dict:
        """JSON form."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def summarize(model: str, batch: int, times_s: list[float]) -> LatencyResult:
    """Percentiles of a list of per-run times in seconds."""
    ms = np.asarray(times_s) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyResult(model, batch, float(p50), float(p90), float(p99), float(ms.mean()), float(ms.std()),
                         batch * 1e3 / float(p50))


def _onnx_input_shape(sess, batch: int) -> tuple[int, ...]:
    shape = sess.get_inputs()[0].shape
    return tuple(batch if i == 0 else int(d) for i, d in enumerate(shape))


def budgeted(budget_s: float, each_s: float, least: int, most: int) -> int:
    """How many timed runs of ``each_s`` seconds fit ``budget_s``, between ``least`` and ``most``
    (``most`` wins where the two cross: it is what the user asked for)."""
    return min(most, max(least, math.ceil(budget_s / max(each_s, 1e-9))))


def warm_round(fns: dict[str, Callable[[], object]]) -> float:
    """Run every callable once (an untimed warm-up round for :func:`interleaved`); seconds of a timed
    round, where each timed call follows an untimed one."""
    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    return 2 * (time.perf_counter() - t0)


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int, task=None,
                rewarm: bool = True) -> dict[str, list[float]]:
    """Time each callable ``runs`` times, alternating A B A B … after ``warmup`` rounds.

    With ``rewarm`` each timed call follows an untimed call of the same model: alternating
    models evict each other's weights from the CPU caches, and a deployed model runs warm,
    so the timed call sees the caches as it would in deployment while load on a shared
    machine still hits every model alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            if rewarm:
                fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if task is not None:
            task.advance()
    return times


def fastest_block(times: list[float], block: int) -> float:
    """The smallest median of consecutive blocks of ``block`` rounds (the median of all, when fewer
    than two blocks fit).

    On a shared or virtual machine the speed moves in spells of seconds to a minute: on the
    machine these numbers come from, a spell added about 0.65 ms to every ResNet-56 inference,
    pruned or not (base 2.2 -> 2.8 ms, a pruned copy 1.0 -> 1.7 ms), so the ratio of medians read
    0.59 in a spell and 0.45 outside it. Models timed in the same interleaved rounds have their
    fastest blocks in the same quiet stretch whenever the run saw one (the reasoning of
    ``timeit``'s advice to take the minimum of repeats).
    """
    n = len(times) // block
    if n < 2:
        return statistics.median(times)
    return min(statistics.median(times[i * block:(i + 1) * block]) for i in range(n))


def onnx_times(paths: list[str | Path], batch: int, runs: int = 100, warmup: int = 10, threads: int | None = None,
               task: Task | None = None, seed: int = 0) -> dict[str, list[float]]:
    """Per-run seconds of each ONNX model (keyed by its path as given) at one batch size, interleaved."""
    sessions = {str(p): ort_session(p, threads) for p in paths}
    rng = np.random.default_rng(seed)
    feeds = {name: {INPUT_NAME: rng.standard_normal(_onnx_input_shape(s, batch)).astype(np.float32)}
             for name, s in sessions.items()}
    fns = {name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}
    return interleaved(fns, runs, warmup, task)


def bench_onnx(
    paths: list[str | Path],
    batches: list[int],
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    reporter: Reporter | None = None,
    seed: int = 0,
) -> list[LatencyResult]:
    """Measure ONNX Runtime CPU latency of each model at each batch size, interleaved."""
    rep = reporter or Reporter()
    results = []
    for b in batches:
        with rep.task(f"batch {b}", runs) as task:
            times = onnx_times(paths, b, runs, warmup, threads, task, seed)
        results += [summarize(name, b, t) for name, t in times.items()]
    return results
