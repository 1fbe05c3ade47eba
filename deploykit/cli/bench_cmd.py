"""``deploykit bench``: ONNX Runtime CPU latency, optionally against a second model."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import emit, json_option, out, table

EXAMPLE = "Example: deploykit bench out/base.onnx --vs out/pruned.onnx --batch 1,8 --runs 200 --threads 1"


def parse_batches(text: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]``."""
    from deploykit.errors import DeployKitError

    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise DeployKitError(f"--batch {text!r} must be positive integers separated by commas, e.g. 1,8")
    return vals


@click.command("bench", epilog=EXAMPLE, help="""ONNX Runtime CPU latency: p50/p90/p99 and throughput per batch size.
With --vs the two models run interleaved (A B A B ...) and the p50 ratio (other / first) is reported.""")
@click.argument("onnx_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--vs", type=click.Path(dir_okay=False, path_type=Path), help="A second ONNX model, run interleaved.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma separated.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Timed runs per model and batch size.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads (default: the runtime's choice).")
@json_option
def bench(onnx_path: Path, vs: Path | None, batch: str, runs: int, warmup: int, threads: int | None,
          json_path: Path | None) -> None:
    """Measure latency."""
    from deploykit.bench.latency import bench_onnx
    from deploykit.progress import RichReporter

    sizes = parse_batches(batch)
    paths = [onnx_path] + ([vs] if vs else [])
    results = bench_onnx(paths, sizes, runs=runs, warmup=warmup, threads=threads, reporter=RichReporter())
    out(table(["model", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s"],
              [[r.model, r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.throughput] for r in results]))
    result: dict = {"results": [r.to_dict() for r in results]}
    if vs:
        p50 = {(r.model, r.batch): r.p50_ms for r in results}
        ratios = {b: round(p50[(str(vs), b)] / p50[(str(onnx_path), b)], 4) for b in sizes}
        result["ratio_p50"] = ratios[sizes[0]] if len(sizes) == 1 else {str(b): v for b, v in ratios.items()}
        out(f"p50 ratio {vs} / {onnx_path}: {result['ratio_p50']}")
    emit(result, json_path)
