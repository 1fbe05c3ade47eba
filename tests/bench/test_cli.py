"""deploykit bench (several models, sweeps, every output format) and deploykit profile, end to end on tiny models."""

from __future__ import annotations

import csv
import json

import pytest

from deploykit.bench.latency_table.file import read_lut
from deploykit.cli.main import main as cli
from tests.bench.conftest import SPEC


@pytest.fixture(scope="module")
def two_onnx(tmp_path_factory):
    from deploykit.bench.latency_table.variants import prune_to_widths
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    d = tmp_path_factory.mktemp("onnx")
    base = build_model(SPEC)
    export_onnx(base, d / "base.onnx")
    small = build_model(SPEC)
    small.model = prune_to_widths(small.model, small.example_input(), {"pw": 8, "conv1": 8})
    export_onnx(small, d / "small.onnx")
    return d / "base.onnx", d / "small.onnx"


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deploykit: error:") and all(p in err[0] for p in parts), err


def test_bench_two_models_batch_and_thread_sweep_every_output(tmp_path, capsys, two_onnx):
    base, small = two_onnx
    outs = {k: tmp_path / f"b.{k}" for k in ("json", "csv", "md", "png")}
    rc = cli(["bench", str(base), str(small), "--batch", "1,2", "--threads", "1,2", "--runs", "3", "--warmup", "1",
              "--memory", "--json", str(outs["json"]), "--csv", str(outs["csv"]), "--md", str(outs["md"]),
              "--plot", str(outs["png"])])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(outs["json"].read_text())
    assert len(doc["results"]) == 8  # 2 models x 2 batches x 2 thread counts
    row = doc["results"][0]
    assert {"model", "backend", "batch", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput",
            "peak_memory_mb", "macs"} <= set(row)
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in doc["results"])
    assert {r["threads"] for r in doc["results"]} == {1, 2} and {r["batch"] for r in doc["results"]} == {1, 2}
    assert all(r["peak_memory_mb"] is None or r["peak_memory_mb"] > 0 for r in doc["results"])
    macs = {r["model"]: r["macs"] for r in doc["results"]}
    assert macs[str(small)] < macs[str(base)]
    assert len(doc["ratios"]) == 4 and set(doc["ratio_p50"]) == {"1@1", "1@2", "2@1", "2@2"}
    assert {"cpu", "cpus", "date", "load_average"} <= set(doc["machine"]) and doc["settings"]["runs"] == 3
    rows = list(csv.DictReader(outs["csv"].open()))
    assert len(rows) == 8 and {"model", "batch", "threads", "p50_ms", "peak_memory_mb", "macs"} <= set(rows[0])
    md = outs["md"].read_text()
    assert md.startswith("| model | backend | batch | threads | p50 ms") and md.count("\n| ") == 9 and "Machine:" in md
    assert outs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_bad_input_writes_nothing(tmp_path, capsys, two_onnx):
    base, _ = two_onnx
    j, p = tmp_path / "r.json", tmp_path / "r.png"
    assert cli(["bench", str(base), "--threads", "0", "--json", str(j), "--plot", str(p)]) == 2
    _one_line_error(capsys, "--threads '0' must be positive integers")
    assert cli(["bench", str(base), "--backend", "trt", "--threads", "2", "--json", str(j)]) == 2
    _one_line_error(capsys, "--threads does not apply to backend trt")
    assert cli(["bench", str(base), str(tmp_path / "none.onnx"), "--md", str(tmp_path / "r.md")]) == 2
    _one_line_error(capsys, "does not exist")
    assert not any(tmp_path.iterdir())


def test_profile_measures_caches_and_writes_a_table(tmp_path, capsys):
    lut = tmp_path / "lut.json"
    args = ["profile", SPEC, "--backend", "ort", "--threads", "1", "--scan", "4", "--grid", "2", "--runs", "2",
            "--passes", "1", "--calibration-runs", "2", "--out", str(lut), "--json", str(tmp_path / "p.json")]
    assert cli(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "table measured in " in out and "(scan " in out and "ladder (top)" in out
    table = read_lut(lut)
    assert table.key.backend == "ort" and table.key.threads == 1 and table.key.batch == 1 and table.key.precision == "fp32"
    assert set(table.layers) == {"stem", "dw", "pw", "conv1", "conv2", "head"} and table.base_ms > 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["cache"].endswith(table.key.file_name()) and set(doc["groups"]) == set(table.groups)
    assert cli(args) == 0  # the second time it comes from the cache
    assert "table from the cache:" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--backend", "tvm"], "unknown latency backend 'tvm'"),
    (["--precision", "int4"], "precision 'int4' is not measured on backend ort; valid: fp32"),
    (["--threads", "x"], "--threads 'x': give a positive integer or 'default'"),
])
def test_profile_bad_input_writes_nothing(tmp_path, capsys, args, message):
    assert cli(["profile", SPEC, *args, "--out", str(tmp_path / "lut.json")]) == 2
    _one_line_error(capsys, message)
    assert not any(tmp_path.iterdir())


def test_onnx_times_runs_every_file_at_the_batch_asked(two_onnx):
    from deploykit.bench.latency import fastest_block, onnx_times

    base, small = two_onnx
    times = onnx_times([base, small], batch=2, runs=5, warmup=1, threads=1)
    assert set(times) == {str(base), str(small)}
    assert all(len(t) == 5 and all(s > 0 for s in t) for t in times.values())
    assert min(times[str(base)]) <= fastest_block(times[str(base)], 2) <= max(times[str(base)])
