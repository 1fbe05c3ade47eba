"""``deploykit bench``: latency of one or several models side by side, over batch sizes and
thread counts, on any backend; or results measured on a device (``--import results.json``)."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import emit, json_option, out, table, trust_option
from deploykit.cli.options import backend_option, positive_ints, threads_option

EXAMPLE = ("Example: deploykit bench out/base.onnx out/pruned.onnx --batch 1,8 --threads 1,2 --runs 200 --memory "
           "--md bench.md --csv bench.csv --plot bench.png\n\n"
           "Example: deploykit bench out/base.onnx --vs out/pruned.onnx --batch 1,8 --runs 200 --threads 1\n\n"
           "Example: deploykit bench --import out/r20-jetson/out/results.json")


def parse_batches(text: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]``."""
    return positive_ints(text, "--batch", "1,8")


def _table(results, show_threads: bool = False, show_memory: bool = False) -> str:
    head = ["model", "batch"] + (["threads"] if show_threads else []) + ["p50 ms", "p90 ms", "p99 ms", "images/s"]
    head += ["peak MiB"] if show_memory else []
    rows = []
    for r in results:
        row = [r.model, r.batch] + ([r.threads or "default"] if show_threads else [])
        row += [r.p50_ms, r.p90_ms, r.p99_ms, r.throughput] + ([getattr(r, "peak_memory_mb", None)] if show_memory else [])
        rows.append(row)
    return table(head, rows)


def _import(import_path: Path, json_path: Path | None) -> None:
    from deploykit.bench.bundle_results import read_results

    doc = read_results(import_path)
    results = doc.latency_results()
    dev = doc.device
    out(f"{doc.model} ({doc.precision}) measured on {dev.get('model') or dev.get('gpu') or 'unknown device'}, "
        f"TensorRT {dev.get('tensorrt') or '?'}, power mode {(dev.get('power_mode') or '?').splitlines()[0]}, "
        f"CUDA graphs {'on' if doc.settings.cuda_graph else 'off'}")
    out(_table(results))
    if doc.reference_check is not None:
        out(f"reference check: {'passed' if doc.reference_check.get('passed') else 'FAILED'}")
    emit({"results": [r.to_dict() for r in results],
          "imported": doc.model_dump(by_alias=True, exclude={"results"})}, json_path)


def _legacy_ratio(ratios, first: str, second: str, sizes: list[int], threads: list[int | None]):
    """``ratio_p50`` of the second model: a number for one setting, else keyed by batch (and threads)."""
    got = {(r.batch, r.threads): r.ratio_p50 for r in ratios if r.model == second and r.reference == first}
    if len(got) == 1:
        return next(iter(got.values()))
    if len(threads) == 1:
        return {str(b): v for (b, _), v in got.items()}
    return {f"{b}@{t or 'default'}": v for (b, t), v in got.items()}


@click.command("bench", epilog=EXAMPLE, help="""Latency: p50/p90/p99/mean/std and throughput per batch size and
thread count, on ONNX Runtime CPU by default (see --backend). Several models run side by side,
interleaved round-robin (A B C A B C ...) after a warm-up, so noise on a shared machine hits them alike; the p50
ratio of each model to the first is reported. --memory adds the peak memory of a fresh process running each
model. Outputs: --json, --csv, --md (markdown table), --plot (PNG: latency against batch; latency against MACs
across models). --import reads a device's results.json into the same report.""")
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--vs", type=click.Path(dir_okay=False, path_type=Path), help="Another model to run interleaved (same as a second MODEL).")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma separated.")
@threads_option(sweep=True)
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Timed rounds per setting (each model once per round).")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed rounds first.")
@backend_option("deploykit.runtime.backends:RUNNERS", "Runner backend", default="ort")
@click.option("--memory", is_flag=True, help="Also measure peak memory (a fresh process per model and batch size).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as CSV.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a markdown table.")
@click.option("--plot", "png_path", type=click.Path(dir_okay=False, path_type=Path), help="Write PNG plots.")
@click.option("--import", "import_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Read results.json written on a device (Jetson bundle) instead of measuring.")
@trust_option
@json_option
def bench(models: tuple[Path, ...], vs: Path | None, batch: str, threads: tuple[int | None, ...], runs: int,
          warmup: int, backend: str, memory: bool, csv_path: Path | None, md_path: Path | None, png_path: Path | None,
          import_path: Path | None, trust_factory: bool, json_path: Path | None) -> None:
    """Measure latency."""
    from deploykit.atomic import check_writable
    from deploykit.errors import DeployKitError

    for flag, path in (("--csv", csv_path), ("--md", md_path), ("--plot", png_path)):
        if path is not None:
            check_writable(path, flag)  # before measuring, not after
    if import_path is not None:
        if models or vs is not None:
            raise DeployKitError("--import reads measured results: give no model with it")
        _import(import_path, json_path)
        return
    if not models:
        raise DeployKitError("give an ONNX file to measure, or --import results.json")

    from deploykit.bench.machine import machine
    from deploykit.bench.report import report_dict, write_all
    from deploykit.bench.sweep import BenchReport, SweepConfig, check_threads, ratios, sweep
    from deploykit.progress import RichReporter

    paths = list(dict.fromkeys([*models, *([vs] if vs else [])]))
    cfg = SweepConfig(backend=backend, batches=tuple(parse_batches(batch)), threads=threads,
                      runs=runs, warmup=warmup, memory=memory)
    check_threads(cfg)
    from deploykit.zoo import trusting_factories

    with trusting_factories(trust_factory):  # --backend torch loads artifacts, whose plan.json may name a factory
        rows = sweep(paths, cfg, RichReporter())
    rep = BenchReport(rows, {"backend": backend, "batches": list(cfg.batches), "threads": list(cfg.threads), "runs": runs,
                             "warmup": warmup, "memory": memory}, machine(), ratios(rows))
    out(_table(rows, show_threads=len(cfg.threads) > 1 or cfg.threads != (None,), show_memory=memory))
    for r in rep.ratios:
        where = f"batch {r.batch}" + (f", {r.threads} threads" if r.threads else "")
        out(f"p50 ratio {r.model} / {r.reference} ({where}): {r.ratio_p50}")
    result = report_dict(rep)
    result["backend"] = backend
    if len(paths) > 1:
        result["ratio_p50"] = _legacy_ratio(rep.ratios, str(paths[0]), str(paths[1]), list(cfg.batches), list(cfg.threads))
    write_all(rep, {"csv": csv_path, "md": md_path, "png": png_path})
    emit(result, json_path)
