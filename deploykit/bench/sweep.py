"""Several models, side by side, over batch sizes and thread counts, on any Runner backend.

For every (threads, batch) setting the models run interleaved, round-robin (A B C A B
C …) after a warm-up, so that a burst of load on a shared machine hits all of them
alike and their ratios stay meaningful; each row reports p50/p90/p99/mean/std and
throughput, and optionally the peak memory of a fresh process running that model at
that batch size (:mod:`deploykit.bench.memory`). Backends differ only in how a
runner is opened and how threads are set, which their records in
:data:`deploykit.runtime.backends.BACKENDS` say.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploykit.bench.latency import LatencyResult, interleaved, summarize
from deploykit.errors import DeployKitError
from deploykit.progress import Reporter
from deploykit.runtime.backends import RUNNERS


@dataclass
class BenchRow(LatencyResult):
    """One model at one batch size and thread count."""

    backend: str = "ort"
    threads: int | None = None
    peak_memory_mb: float | None = None
    macs: int | None = None


@dataclass(frozen=True)
class SweepConfig:
    """What to measure.

    Attributes:
        backend: a registered backend (:data:`deploykit.runtime.backends.RUNNERS`).
        batches: batch sizes.
        threads: intra-op thread counts (None: the runtime's default).
        runs: timed rounds per setting (every model runs once per round).
        warmup: untimed rounds first.
        memory: also measure peak memory (one fresh process per model and batch size).
        seed: input data seed.
    """

    backend: str = "ort"
    batches: tuple[int, ...] = (1,)
    threads: tuple[int | None, ...] = (None,)
    runs: int = 100
    warmup: int = 10
    memory: bool = False
    seed: int = 0


def model_macs(path: str, runner: object) -> int | None:
    """Batch-1 MACs: counted in the ONNX graph, or measured on a torch runner's model."""
    p = Path(path)
    onnx_file = p / "model.onnx" if p.is_dir() and (p / "model.onnx").is_file() else p
    if onnx_file.suffix == ".onnx" and onnx_file.is_file():
        from deploykit.bench.macs import onnx_macs

        return onnx_macs(onnx_file)
    built = getattr(runner, "built", None)
    if built is not None:
        from deploykit.graph.costs import measure

        return measure(built.model, built.example_input()).macs
    return None


def _feed(runner, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for m in runner.get_input_metadata().values():
        feed[m.name] = rng.standard_normal(m.concrete_shape(batch)).astype(m.dtype)
    runner.check_feed(feed)  # once, outside the timed calls
    return feed


GIB = 2**30


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping: ``MemAvailable``, else the free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _per_image_bytes(metas: Sequence) -> int:
    """Bytes of one image's worth of the given tensors (dynamic dimensions besides the batch count as 1)."""
    return sum(math.prod(1 if d is None else d for d in m.shape[1:]) * np.dtype(m.dtype).itemsize for m in metas)


def memory_needed(runners: dict, batch: int) -> int:
    """A lower bound on the bytes one setting at ``batch`` allocates.

    Every model's input feed is kept for the whole setting, each drawn as float64
    before the cast (8 bytes per element, one model at a time); then one model at a
    time holds its outputs and at least its largest activation (ONNX files).
    """
    from deploykit.bench.macs import onnx_largest_activation

    feeds, peak = 0, 0
    for name, r in runners.items():
        ins = list(r.get_input_metadata().values())
        in_bytes = _per_image_bytes(ins)
        draw = sum(math.prod(1 if d is None else d for d in m.shape[1:]) * 8 for m in ins)
        p = Path(name)
        onnx_file = p / "model.onnx" if p.is_dir() else p
        act = onnx_largest_activation(onnx_file) if onnx_file.suffix == ".onnx" and onnx_file.is_file() else 0
        feeds += in_bytes
        peak = max(peak, draw, _per_image_bytes(list(r.get_output_metadata().values())) + act)
    return batch * (feeds + peak)


def check_memory(runners: dict, batches: Sequence[int]) -> None:
    """Refuse, before allocating anything, a batch size whose tensors cannot fit in the available memory.

    Raises:
        DeployKitError: one line with the estimate and the memory available.
    """
    avail = available_memory()
    if avail is None:
        return
    b = max(batches)  # smaller batches need less
    need = memory_needed(runners, b)
    if need > avail:
        raise DeployKitError(f"--batch {b} needs at least {need / GIB:,.1f} GiB (inputs, outputs and the largest "
                             f"activation of {b} images) but {avail / GIB:,.1f} GiB of memory is available; "
                             "give a smaller --batch")


def check_threads(cfg: SweepConfig) -> None:
    """Refuse a thread count on a backend that has none."""
    if not RUNNERS.get(cfg.backend).takes_threads and any(t is not None for t in cfg.threads):
        raise DeployKitError(f"--threads does not apply to backend {cfg.backend}; valid with: "
                             + ", ".join(n for n in RUNNERS.names() if RUNNERS.get(n).takes_threads))


def sweep(paths: Sequence[str | Path], cfg: SweepConfig, reporter: Reporter | None = None) -> list[BenchRow]:
    """Measure every model at every (threads, batch) setting, models interleaved.

    Raises:
        DeployKitError: an unknown backend, a model the backend cannot load.
    """
    backend = RUNNERS.get(cfg.backend)
    check_threads(cfg)
    rep = reporter or Reporter()
    names = [str(p) for p in paths]
    rng = np.random.default_rng(cfg.seed)
    rows: list[BenchRow] = []
    macs: dict[str, int | None] = {}
    for threads in cfg.threads:
        runners = {name: backend.open(name, threads) for name in names}
        try:
            for r in runners.values():
                r.activate()
            if threads == cfg.threads[0]:
                check_memory(runners, cfg.batches)  # before any input is allocated
            for name, r in runners.items():
                if name not in macs:
                    macs[name] = model_macs(name, r)
            with backend.threads(threads):
                for b in cfg.batches:
                    fns = {}
                    for name, r in runners.items():
                        feed = _feed(r, b, rng)
                        fns[name] = lambda r=r, f=feed: r.infer_impl(f)
                    label = f"batch {b}" + (f", {threads} threads" if threads else "") + f" ({cfg.backend})"
                    with rep.task(label, cfg.runs) as task:
                        times = interleaved(fns, cfg.runs, cfg.warmup, task)
                    for name, t in times.items():
                        s = summarize(name, b, t)
                        rows.append(BenchRow(**s.__dict__, backend=cfg.backend, threads=threads, macs=macs[name]))
        finally:
            for r in runners.values():
                r.deactivate()
    if cfg.memory:
        _add_memory(rows, cfg, rep)
    return rows


def _add_memory(rows: list[BenchRow], cfg: SweepConfig, rep: Reporter) -> None:
    from deploykit.bench.memory import peak_memory

    with rep.task("peak memory (a fresh process each)", len(rows)) as task:
        for row in rows:
            row.peak_memory_mb = peak_memory(row.model, cfg.backend, row.batch, row.threads)
            task.advance()


@dataclass
class Ratio:
    """p50 of ``model`` over p50 of the first model, at one setting."""

    model: str
    reference: str
    batch: int
    threads: int | None
    ratio_p50: float

    def to_dict(self) -> dict:
        """JSON form."""
        return dict(self.__dict__)


def ratios(rows: Sequence[BenchRow]) -> list[Ratio]:
    """Every model's p50 relative to the first model's, per (batch, threads)."""
    out: list[Ratio] = []
    first = rows[0].model if rows else ""
    by = {(r.model, r.batch, r.threads): r for r in rows}
    for r in rows:
        ref = by.get((first, r.batch, r.threads))
        if r.model != first and ref is not None and ref.p50_ms > 0:
            out.append(Ratio(r.model, first, r.batch, r.threads, round(r.p50_ms / ref.p50_ms, 4)))
    return out


@dataclass
class BenchReport:
    """Everything a bench run produced (what the writers render)."""

    rows: list[BenchRow]
    settings: dict
    machine: dict
    ratios: list[Ratio] = field(default_factory=list)
