"""``deploykit demo``: the whole path on the embedded digits model, one table at the end."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import emit, human, json_option, out, table

EXAMPLE = "Example: deploykit demo --target-macs 0.5 --out /tmp/deploykit-demo"


@click.command("demo", epilog=EXAMPLE, help="""Train (first run only; cached) a small residual CNN on scikit-learn's
handwritten digits, compress it with memory-normalized Group Fisher and a short distilled fine-tune, export both
models to ONNX, check ONNX Runtime parity, benchmark both interleaved, and print one table.""")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the artifact and ONNX files (default: CACHE/demo).")
@click.option("--target-macs", default=0.5, show_default=True, type=float, help="Fraction of the MACs to keep.")
@click.option("--finetune-epochs", default=5.0, show_default=True, type=float, help="Fine-tuning epochs after pruning.")
@click.option("--runs", default=300, show_default=True, type=click.IntRange(min=1), help="Timed ONNX Runtime runs per model.")
@json_option
def demo(out_dir: Path | None, target_macs: float, finetune_epochs: float, runs: int, json_path: Path | None) -> None:
    """Run the demo."""
    from deploykit.atomic import check_writable, staged
    from deploykit.bench.latency import bench_onnx
    from deploykit.compression import compress
    from deploykit.export.onnx import export_checked, sidecar_path
    from deploykit.progress import RichReporter
    from deploykit.zoo import build_model
    from deploykit.zoo.digits import cache_dir

    rep = RichReporter()
    root = out_dir or cache_dir() / "demo"
    check_writable(root, "--out", directory=True)  # before the minutes of work, not after
    base = build_model("digits:demo")
    report = compress(
        reporter=rep, model="digits:demo", out=str(root / "pruned"), target_macs=target_macs, criterion="fisher",
        data="digits", calib_batches=12, finetune_epochs=finetune_epochs, lr=0.01, kd=True, round_to=8, force=True,
    )
    pruned = build_model(str(root / "pruned"))
    onnx_paths, parity = {}, {}
    for name, built in (("base", base), ("pruned", pruned)):
        path = root / f"{name}.onnx"
        with staged() as stage:  # a model failing its parity check never replaces the previous one
            checked, res = export_checked(built, stage.scratch(path), path,
                                          [built.example_input(1), built.example_input(8, seed=1)])
            parity[name] = {k: res[k] for k in ("max_abs_diff", "max_rel_diff")}
            stage.put(sidecar_path(checked), sidecar_path(path))
            stage.put(checked, path)
        onnx_paths[name] = path
    rep.log("benchmarking both ONNX files, interleaved, 1 thread, batch 1")
    lat = {r.model: r for r in bench_onnx(list(onnx_paths.values()), [1], runs=runs, warmup=30, threads=1, reporter=rep)}
    rows, result = [], {}
    for name in ("base", "pruned"):
        r = report[name]
        p50 = lat[str(onnx_paths[name])].p50_ms
        rows.append([name, human(r["params"]), human(r["macs"]), human(r["activation_bytes"], "B"), r.get("top1"), f"{p50:.4f}"])
        result[name] = {**r, "p50_ms": p50, **parity[name]}

    def ratio(k: str) -> str:
        return f"{result['pruned'][k] / result['base'][k]:.3f}"

    rows.append(["pruned/base", ratio("params"), ratio("macs"), ratio("activation_bytes"),
                 f"{result['pruned']['top1'] - result['base']['top1']:+.2f}", ratio("p50_ms")])
    out()
    out("digits:demo compressed with Group Fisher (memory-normalized); ONNX Runtime CPU, batch 1, 1 thread, interleaved")
    out(table(["model", "params", "MACs", "activations", "top-1 %", "ORT p50 ms"], rows))
    out(f"artifact {root / 'pruned'}; ONNX {onnx_paths['base']}, {onnx_paths['pruned']} "
        f"(parity: max rel diff {max(p['max_rel_diff'] for p in parity.values()):.2g})")
    emit(result, json_path)
