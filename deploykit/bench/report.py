"""Bench reports: JSON, CSV, a markdown table and PNG plots, one writer per format.

Every writer renders a :class:`~deploykit.bench.sweep.BenchReport` to a path,
atomically. The plot has two panels: p50 latency against batch size (one line per
model and thread count, shaded up to p90) and p50 latency against MACs
across models (one point per model, per batch size), the chart that shows whether
latency falls with MACs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploykit.atomic import atomic_file, write_json
from deploykit.bench.sweep import BenchReport, BenchRow
from deploykit.registry import Registry

WRITERS: Registry[Callable[[BenchReport, Path], None]] = Registry("report format")

COLUMNS = ["model", "backend", "batch", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput",
           "peak_memory_mb", "macs"]


def report_dict(rep: BenchReport) -> dict[str, Any]:
    """The JSON document."""
    return {"machine": rep.machine, "settings": rep.settings, "results": [r.to_dict() for r in rep.rows],
            "ratios": [r.to_dict() for r in rep.ratios]}


@WRITERS.register("json")
def write_json_report(rep: BenchReport, path: Path) -> None:
    """Everything, machine and settings included."""
    write_json(path, report_dict(rep))


@WRITERS.register("csv")
def write_csv(rep: BenchReport, path: Path) -> None:
    """One row per (model, batch, threads)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rep.rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    with atomic_file(path) as tmp:
        tmp.write_text(buf.getvalue())


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(rep: BenchReport) -> str:
    """A markdown table of the rows, the p50 ratios, and the machine."""
    ratio = {(r.model, r.batch, r.threads): r.ratio_p50 for r in rep.ratios}
    head = ["model", "backend", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "images/s",
            "p50 ratio", "peak MiB", "GMACs"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    for r in rep.rows:
        cells = [r.model, r.backend, r.batch, r.threads if r.threads else "default", r.p50_ms, r.p90_ms, r.p99_ms, r.mean_ms,
                 r.std_ms, r.throughput, ratio.get((r.model, r.batch, r.threads)), r.peak_memory_mb,
                 None if r.macs is None else r.macs / 1e9]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    m = rep.machine
    s = rep.settings
    lines += ["", f"Machine: {m.get('cpu')} ({m.get('cpus')} cpus), load average {m.get('load_average')}, "
                  f"{m.get('date')}; onnxruntime {m.get('onnxruntime')}, torch {m.get('torch')}.",
              f"Settings: {s.get('runs')} timed rounds after {s.get('warmup')} warm-up rounds, models interleaved "
              "round-robin; p50 ratio = p50 / p50 of the first model at the same batch and threads."]
    return "\n".join(lines) + "\n"


@WRITERS.register("md")
def write_markdown(rep: BenchReport, path: Path) -> None:
    """The markdown table."""
    with atomic_file(path) as tmp:
        tmp.write_text(markdown(rep))


def _label(r: BenchRow, many_threads: bool) -> str:
    name = Path(r.model).stem or r.model
    return f"{name} ({r.threads or 'default'} thr)" if many_threads else name


@WRITERS.register("png")
def write_png(rep: BenchReport, path: Path) -> None:
    """Latency against batch size, and latency against MACs across models."""
    import matplotlib

    matplotlib.use("Agg")  # no display; never a GUI backend
    import matplotlib.pyplot as plt

    rows = rep.rows
    many_threads = len({r.threads for r in rows}) > 1
    fig, (ax_b, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[BenchRow]] = {}
    for r in rows:
        series.setdefault(_label(r, many_threads), []).append(r)
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r.batch)
        ax_b.plot([r.batch for r in rs], [r.p50_ms for r in rs], marker="o", label=label)
        ax_b.fill_between([r.batch for r in rs], [r.p50_ms for r in rs], [r.p90_ms for r in rs], alpha=0.15)
    ax_b.set_xlabel("batch size")
    ax_b.set_ylabel("latency p50 (ms), band to p90")
    ax_b.set_title("latency against batch")
    batches = sorted({r.batch for r in rows})
    if len(batches) > 1:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax_b.set_xscale("log", base=2)
        ax_b.set_xticks(batches)
        ax_b.xaxis.set_major_formatter(ScalarFormatter())
        ax_b.xaxis.set_minor_formatter(NullFormatter())
    ax_b.grid(alpha=0.3)
    ax_b.legend(fontsize=7)
    with_macs = [r for r in rows if r.macs]
    for b in sorted({r.batch for r in with_macs}):
        rs = [r for r in with_macs if r.batch == b]
        ax_m.scatter([r.macs / 1e9 for r in rs], [r.p50_ms for r in rs], label=f"batch {b}")
        for r in rs:
            ax_m.annotate(_label(r, many_threads), (r.macs / 1e9, r.p50_ms), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax_m.set_xlabel("GMACs (batch 1)")
    ax_m.set_ylabel("latency p50 (ms)")
    ax_m.set_title("latency against MACs across models")
    ax_m.grid(alpha=0.3)
    if with_macs:
        ax_m.legend(fontsize=7)
    else:
        ax_m.text(0.5, 0.5, "MACs unknown for these models", ha="center", va="center", transform=ax_m.transAxes)
    m = rep.machine
    fig.suptitle(f"{rows[0].backend if rows else ''} on {m.get('cpu')}, {m.get('date')}", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_all(rep: BenchReport, outputs: dict[str, Path | None]) -> list[Path]:
    """Write every requested ``{format: path}``; returns the paths written."""
    done = []
    for fmt, path in outputs.items():
        if path is not None:
            WRITERS.get(fmt)(rep, Path(path))
            done.append(Path(path))
    return done
