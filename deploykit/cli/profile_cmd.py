"""``deploykit profile``: measure a model's per-layer latency table on a backend."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, ignore_option, json_option, model_options, out, table
from deploykit.cli.options import backend_option, threads_option

EXAMPLE = ("Example: deploykit profile torchvision:resnet18 --backend ort --threads 1 --out lut.json\n\n"
           "then: deploykit compress torchvision:resnet18 --target-latency 0.5 --normalize latency --round-to auto "
           "--criterion l2 --lut lut.json --out out/r18")


@click.command("profile", epilog=EXAMPLE, help=f"""Measure the latency table pruning to latency uses: every
prunable group's layers over the top --scan widths, searched by bisection (cliffs: the widths where latency
jumps, and the ladder of widths at the low side of each step, what --round-to auto picks from), every convolution and linear layer on a
grid of (input, output) channel counts fitted monotone, and a calibration of the table against whole pruned
variants timed end to end. The table is cached, keyed by model, backend, device, precision, batch and threads
(compress reuses it); --out also writes it to a file for --lut.\n\n{MODEL_HELP}""")
@click.argument("model")
@backend_option("deploykit.bench.latency_table.timers:TIMERS", "Where to measure", default="ort")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the table here (for --lut).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Batch size of every measurement.")
@threads_option(sweep=False)
@click.option("--precision", default="fp32", show_default=True, help="Precision the backend runs (fp32).")
@click.option("--grid", default=6, show_default=True, type=click.IntRange(min=2), help="Points per channel axis of a layer table.")
@click.option("--scan", default=32, show_default=True, type=click.IntRange(min=0),
              help="Channels scanned below each group's full width for cliffs (0: no scan, ladders of multiples of 8).")
@click.option("--runs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per layer point, at most (a slow layer gets fewer, at least 3).")
@click.option("--passes", default=2, show_default=True, type=click.IntRange(min=1),
              help="Measure every layer point this many times and keep the least (robust to load bursts).")
@click.option("--calibration-runs", default=30, show_default=True, type=click.IntRange(min=2),
              help="Interleaved end-to-end rounds of the calibration variants.")
@click.option("--refresh", is_flag=True, help="Measure again even if a cached table exists.")
@model_options
@ignore_option
@json_option
def profile(model: str, backend: str, out_path: Path | None, batch: int, threads: int | None, precision: str, grid: int,
            scan: int, runs: int, passes: int, calibration_runs: int, refresh: bool, weights: str | None,
            input_shape: str | None, trust_factory: bool, ignore: tuple[str, ...], json_path: Path | None) -> None:
    """Measure a latency table."""
    from deploykit.atomic import check_writable
    from deploykit.bench.latency_table.profile import ProfileConfig, load_or_profile
    from deploykit.bench.latency_table.timers import TimingConfig, get_timer
    from deploykit.graph.costs import CostModel
    from deploykit.graph.groups import ModelGraph
    from deploykit.progress import RichReporter
    from deploykit.zoo import build_model, check_input, parse_shape

    if out_path is not None:
        check_writable(out_path, "--out")  # before the minutes of measuring, not after
    timing = TimingConfig(batch=batch, threads=threads, runs=runs, precision=precision)
    cfg = ProfileConfig(backend=backend, timing=timing, grid=grid, scan=scan, passes=passes,
                        calibration_runs=calibration_runs)
    get_timer(backend, cfg.timing)  # a precision the backend does not measure fails before any slow work
    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None, pretrained=False,
                        trust_factory=trust_factory)
    check_input(built)
    graph = ModelGraph(built.traced, built.example_input(), ignore=list(ignore))
    cost_model = CostModel(graph)
    rep = RichReporter()
    lut, source = load_or_profile(cost_model, built.spec, cfg, rep, ignore=list(ignore), refresh=refresh)
    rows = []
    for gid, c in lut.groups.items():
        lad = c.ladder
        shown = ", ".join(map(str, lad[-5:])) + (f" (+{len(lad) - 5} below)" if len(lad) > 5 else "")
        rows.append([gid, c.channels, c.period or "-", ", ".join(map(str, c.cliffs[-4:])) or "-", shown])
    out(table(["group", "channels", "step", "cliffs (top)", "ladder (top)"], rows))
    cal = lut.calibration
    out(f"{len(lut.layers)} layer tables; end to end = {cal.load:.3f} x ({cal.scale:.3f} x layers + {cal.fixed_ms:.3f} ms "
        f"+ {cal.ms_per_mb:.4f} ms/MB activations + {cal.ms_per_weight_mb:.4f} ms/MB weights); "
        f"base measured {lut.base_ms:.3f} ms")
    out(table(["calibration variant", "measured ms", "predicted ms"], [[p.variant, p.measured_ms, p.predicted_ms] for p in cal.points]))
    from deploykit.bench.latency_table.file import cache_path

    where = cache_path(lut.key)
    ph = lut.phases
    took = (f" in {lut.seconds:.1f} s (scan {ph['scan']}, layer grids {ph['layers']}, calibration {ph['calibration']} s)"
            if ph else f" in {lut.seconds:.1f} s")
    out(f"table {'measured' + took if source == 'measured' else 'from the cache'}: {where}")
    if out_path is not None:
        lut.save(out_path)
        out(f"wrote {out_path}")
    emit({"cache": str(where), "out": str(out_path) if out_path else None, "key": lut.key.model_dump(),
          "base_ms": lut.base_ms, "seconds": lut.seconds, "phases": lut.phases, "calibration": cal.model_dump(),
          "groups": {gid: {"channels": c.channels, "cliffs": c.cliffs, "period": c.period, "ladder": c.ladder}
                     for gid, c in lut.groups.items()}}, json_path)
