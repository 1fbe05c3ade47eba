"""``deploykit bench``: latency per batch size, optionally against a second model; or read
results measured on a device (``--import results.json`` from a Jetson bundle)."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import emit, json_option, out, table

EXAMPLE = ("Example: deploykit bench out/base.onnx --vs out/pruned.onnx --batch 1,8 --runs 200 --threads 1\n\n"
           "Example: deploykit bench --import out/r20-jetson/out/results.json")


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


def _table(results) -> str:
    return table(["model", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s"],
                 [[r.model, r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.throughput] for r in results])


@click.command("bench", epilog=EXAMPLE, help="""Latency: p50/p90/p99 and throughput per batch size (ONNX Runtime CPU
by default; --backend torch|ort|trt). With --vs the two models run interleaved (A B A B ...) and the p50 ratio
(other / first) is reported. --import reads a device's results.json into the same report.""")
@click.argument("onnx_path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--vs", type=click.Path(dir_okay=False, path_type=Path), help="A second ONNX model, run interleaved.")
@click.option("--batch", default="1", show_default=True, help="Batch sizes, comma separated.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Timed runs per model and batch size.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads (default: the runtime's choice).")
@click.option("--backend", default="ort", show_default=True, help="Runner backend: ort, torch or trt (trt needs a GPU).")
@click.option("--import", "import_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Read results.json written on a device (Jetson bundle) instead of measuring.")
@json_option
def bench(onnx_path: Path | None, vs: Path | None, batch: str, runs: int, warmup: int, threads: int | None,
          backend: str, import_path: Path | None, json_path: Path | None) -> None:
    """Measure latency."""
    from deploykit.errors import DeployKitError

    if import_path is not None:
        from deploykit.bench.imported import read_results

        if onnx_path is not None or vs is not None:
            raise DeployKitError("--import reads measured results: give no model with it")
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
        return
    if onnx_path is None:
        raise DeployKitError("give an ONNX file to measure, or --import results.json")

    from deploykit.progress import RichReporter
    from deploykit.runtime.base import RUNNERS

    RUNNERS.get(backend)
    sizes = parse_batches(batch)
    paths = [onnx_path] + ([vs] if vs else [])
    if backend == "ort":
        from deploykit.bench.latency import bench_onnx

        results = bench_onnx(paths, sizes, runs=runs, warmup=warmup, threads=threads, reporter=RichReporter())
    else:
        from deploykit.bench.backend import bench_backend

        results = bench_backend(paths, sizes, backend, runs=runs, warmup=warmup, reporter=RichReporter())
    out(_table(results))
    result: dict = {"results": [r.to_dict() for r in results], "backend": backend}
    if vs:
        p50 = {(r.model, r.batch): r.p50_ms for r in results}
        ratios = {b: round(p50[(str(vs), b)] / p50[(str(onnx_path), b)], 4) for b in sizes}
        result["ratio_p50"] = ratios[sizes[0]] if len(sizes) == 1 else {str(b): v for b, v in ratios.items()}
        out(f"p50 ratio {vs} / {onnx_path}: {result['ratio_p50']}")
    emit(result, json_path)
