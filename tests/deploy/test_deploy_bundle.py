"""The Jetson bundle: contents, its script syntax-checked and dry-run per TensorRT
version, run end to end against a fake trtexec, and its results read back by
``deploykit bench --import``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploykit.cli.main import main as cli
from deploykit.errors import DeployKitError
from deploykit.export.bundle import render_template, write_bundle
from deploykit.export.onnx import ort_session

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is needed to run the bundle script")
FAKE_TRTEXEC = Path(__file__).with_name("fake_trtexec.py")


@pytest.fixture(scope="module")
def bundle(random_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "r20-jetson"
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    manifest = write_bundle("jetson", random_onnx, out, x)
    return out, manifest, x


def run_sh(bundle_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(bundle_dir / "run.sh"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_contents_and_manifest_hashes(bundle, random_onnx):
    out, manifest, x = bundle
    for f in ("model.onnx", "model.onnx.json", "run.sh", "summarize.py", "results.schema.json", "README.md",
              "reference/input.bin", "reference/output.bin", "kernels/preprocess.cu", "kernels/postprocess.cu",
              "kernels/include/deploykit/preprocess.h"):
        assert (out / f).is_file(), f
        assert manifest["files"][f] == hashlib.sha256((out / f).read_bytes()).hexdigest()
    assert os.access(out / "run.sh", os.X_OK)
    np.testing.assert_array_equal(np.fromfile(out / "reference/input.bin", "<f4").reshape(x.shape), x)
    y = ort_session(random_onnx).run(None, {"input": x})[0]
    np.testing.assert_array_equal(np.fromfile(out / "reference/output.bin", "<f4").reshape(y.shape), y)
    assert json.loads((out / "manifest.json").read_text())["output_shape"] == [4, 10]



def test_templates_are_filled_whole(bundle):
    for name in ("run.sh", "summarize.py", "README.md"):
        assert "@@" not in (bundle[0] / name).read_text(), name
    with pytest.raises(KeyError, match="@@PRECISION@@"):  # a placeholder nothing fills is a bug, never shipped
        render_template("README.md", {"MODEL": "m", "BATCHES": "1 8"})

def test_script_syntax(bundle):
    out = bundle[0]
    assert subprocess.run([BASH, "-n", str(out / "run.sh")]).returncode == 0
    assert subprocess.run([sys.executable, "-m", "py_compile", str(out / "summarize.py")]).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-S", "error", str(out / "run.sh")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(("trt_version", "precision", "expected", "absent"), [
    ("8.5.2", "int8", ["--int8", "--fp16"], ["--stronglyTyped"]),
    ("8.6.1", "fp16", ["--fp16"], ["--stronglyTyped", "--int8"]),
    ("8.6.1", "int8", ["--int8", "--fp16"], ["--stronglyTyped"]),
    ("10.3.0", "int8", ["--stronglyTyped"], ["--int8", "--fp16"]),
    ("11.0.0", "fp16", [], ["--stronglyTyped", "--int8", "--fp16"]),
    ("11.0.0", "int8", [], ["--stronglyTyped", "--int8", "--fp16"]),
])
def test_dry_run_prints_the_right_build_per_tensorrt_version(bundle, tmp_path, trt_version, precision, expected, absent):
    src = bundle[0]
    copy = tmp_path / "b"
    shutil.copytree(src, copy)
    script = (copy / "run.sh").read_text().replace('PRECISION="fp32"', f'PRECISION="{precision}"')
    (copy / "run.sh").write_text(script)
    proc = run_sh(copy, "--dry-run", "--out", str(tmp_path / "out"), env={"TRT_VERSION": trt_version})
    assert proc.returncode == 0, proc.stderr
    build = next(ln for ln in proc.stdout.splitlines() if "--saveEngine" in ln).split()
    for flag in expected:
        assert flag in build
    for flag in absent:
        assert flag not in build
    for needle in ("--timingCacheFile", "--memPoolSize=workspace:1024", "--maxShapes=input:8x3x32x32"):
        assert any(a.startswith(needle) for a in build), needle
    bench = [ln for ln in proc.stdout.splitlines() if "--exportTimes" in ln]
    assert len(bench) == 2 and all("--useCudaGraph" in ln and "--warmUp=2000" in ln and "--duration=10" in ln for ln in bench)
    assert "nvpmodel -q" in proc.stdout and "jetson_clocks --show" in proc.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_script_rejects_bad_arguments(bundle, tmp_path):
    assert run_sh(bundle[0], "--dry-run", "--batches", "16").returncode == 2
    proc = run_sh(bundle[0], "--bogus")
    assert proc.returncode == 2 and "unknown argument" in proc.stderr


def fake_env(tmp_path: Path, **extra: str) -> dict:
    exe = tmp_path / "trtexec"
    exe.write_text(f"#!{sys.executable}\n" + FAKE_TRTEXEC.read_text())
    exe.chmod(0o755)
    return {"TRTEXEC": str(exe), "FAKE_TRTEXEC_LOG": str(tmp_path / "calls.jsonl"), **extra}


def with_precision(bundle_dir: Path, dest: Path, precision: str) -> Path:
    """A copy of the bundle whose script builds ``precision`` (the graph itself stays fp32)."""
    shutil.copytree(bundle_dir, dest)
    script = (dest / "run.sh").read_text().replace('PRECISION="fp32"', f'PRECISION="{precision}"')
    (dest / "run.sh").write_text(script)
    return dest


@pytest.mark.parametrize(("version", "precision"), [("8.5.2", "int8"), ("8.6.1", "fp16"), ("11.0.0", "fp16")])
def test_each_trtexec_version_accepts_the_build_the_script_gives_it(bundle, tmp_path, version, precision):
    copy = with_precision(bundle[0], tmp_path / "b", precision)
    proc = run_sh(copy, "--duration", "1", "--batches", "1", "--no-kernels", "--out", str(tmp_path / "out"),
                  env=fake_env(tmp_path, FAKE_TRTEXEC_VERSION=version))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["device"]["tensorrt"] == version


def test_the_fake_trtexec_refuses_flags_its_version_lacks(tmp_path):
    env = {**os.environ, **fake_env(tmp_path, FAKE_TRTEXEC_VERSION="8.6.1")}
    proc = subprocess.run([env["TRTEXEC"], "--onnx=m.onnx", "--stronglyTyped"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Unknown option: --stronglyTyped" in proc.stderr
    env["FAKE_TRTEXEC_VERSION"] = "11.0.0"
    proc = subprocess.run([env["TRTEXEC"], "--onnx=m.onnx", "--fp16"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Unknown option: --fp16" in proc.stderr


def test_an_unreadable_trtexec_version_stops_the_run_instead_of_guessing(bundle, tmp_path):
    proc = run_sh(bundle[0], "--out", str(tmp_path / "out"), env=fake_env(tmp_path, FAKE_TRTEXEC_VERSION="garbled"))
    assert proc.returncode == 2 and "cannot read the TensorRT version" in proc.stderr and "TRT_VERSION=" in proc.stderr
    calls = [json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls == [["--help"]]  # nothing was built with a guessed flag set


def test_a_tensorrt_older_than_8_5_is_refused(bundle, tmp_path):
    proc = run_sh(bundle[0], "--dry-run", env={"TRT_VERSION": "8.4.3"})
    assert proc.returncode == 2 and "older than 8.5" in proc.stderr


def test_dry_run_compiles_the_kernels_for_the_device_arch(bundle, tmp_path):
    proc = run_sh(bundle[0], "--dry-run", env={"TRT_VERSION": "8.5.2", "CUDA_ARCH": "72", "NVCC": "/usr/local/cuda/bin/nvcc"})
    assert proc.returncode == 0, proc.stderr
    nvcc = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ /usr/local/cuda/bin/nvcc")]
    assert len(nvcc) == 2 and all("-cubin -arch=sm_72" in ln and "--fmad=false" in ln for ln in nvcc)
    assert any("kernels/preprocess.cu" in ln for ln in nvcc) and any("kernels/postprocess.cu" in ln for ln in nvcc)
    assert "--no-kernels" in (bundle[0] / "run.sh").read_text()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
def test_the_device_nvcc_compiles_the_bundled_kernels_and_results_record_it(bundle, tmp_path):
    out = tmp_path / "out"
    proc = run_sh(bundle[0], "--duration", "1", "--batches", "1", "--out", str(out),
                  env=fake_env(tmp_path, CUDA_ARCH="87"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    from deploykit.kernels.fatbin import cubin_arch

    for src in ("preprocess", "postprocess"):
        assert cubin_arch((out / "kernels" / f"{src}.sm_87.cubin").read_bytes()) == 87
    kernels = json.loads((out / "results.json").read_text())["device"]["kernels"]
    assert kernels.startswith("sm_87: preprocess postprocess compiled by release")


def test_summarize_runs_on_jetpack_5s_python_3_8(bundle):
    import ast

    src = (bundle[0] / "summarize.py").read_text()
    ast.parse(src, feature_version=(3, 8))  # JetPack 5 ships Python 3.8
    for newer in ("removeprefix", "removesuffix", "zoneinfo", "match ", "| None", "math.dist", "functools.cache("):
        assert newer not in src, newer


def test_end_to_end_with_a_fake_trtexec_then_bench_import(bundle, tmp_path, capsys):
    out = tmp_path / "out"
    proc = run_sh(bundle[0], "--duration", "1", "--warmup", "100", "--no-cuda-graph", "--out", str(out), env=fake_env(tmp_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    calls = [json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[0] == ["--help"] and len(calls) == 5  # version, build, reference, 2 batch sizes
    assert all("--useCudaGraph" not in c for c in calls)
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "deploykit-bench/1" and doc["precision"] == "fp32"
    assert doc["reference_check"]["passed"] and doc["reference_check"]["max_abs_diff"] < 1e-5
    assert doc["device"]["tensorrt"] == "10.3.0" and doc["settings"] == {
        "warmup_ms": 100.0, "duration_s": 1.0, "cuda_graph": False, "batches": [1, 8]}
    rows = {r["batch"]: r for r in doc["results"]}
    assert set(rows) == {1, 8} and rows[1]["runs"] == 200
    lat = np.array([r["latencyMs"] for r in json.loads((out / "times_b8.json").read_text())])  # no header row
    assert rows[8]["p50_ms"] == pytest.approx(np.percentile(lat, 50), abs=1e-4)
    assert rows[8]["p99_ms"] == pytest.approx(np.percentile(lat, 99), abs=1e-4)
    assert rows[8]["throughput"] == pytest.approx(8e3 / rows[8]["p50_ms"], rel=1e-3)

    report = tmp_path / "imported.json"
    assert cli(["bench", "--import", str(out / "results.json"), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "p50 ms" in text and "reference check: passed" in text
    imported = json.loads(report.read_text())
    assert [r["batch"] for r in imported["results"]] == [1, 8]
    assert set(imported["results"][0]) == {"model", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput"}


def test_reference_mismatch_fails_the_run(bundle, tmp_path):
    proc = run_sh(bundle[0], "--duration", "1", "--out", str(tmp_path / "out"),
                  env=fake_env(tmp_path, FAKE_TRTEXEC_PERTURB="0.5"))
    assert proc.returncode == 1 and "reference check: FAILED" in proc.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["reference_check"]["passed"] is False


def test_bench_import_rejects_files_that_break_the_schema(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"schema": "deploykit-bench/1", "results": []}))
    assert cli(["bench", "--import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a deploykit results file" in err
    bad.write_text("{not json")
    assert cli(["bench", "--import", str(bad)]) == 2


def test_existing_bundle_dir_is_not_overwritten_without_force(bundle, random_onnx):
    out = bundle[0]
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DeployKitError, match="--force"):
        write_bundle("jetson", random_onnx, out, np.zeros((1, 3, 32, 32), np.float32))
    assert sorted(p.name for p in out.iterdir()) == before


def test_unknown_target_and_bad_reference_shape(random_onnx, tmp_path):
    with pytest.raises(DeployKitError, match="valid: jetson"):
        write_bundle("coral", random_onnx, tmp_path / "x", np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(DeployKitError, match="do not fit"):
        write_bundle("jetson", random_onnx, tmp_path / "y", np.zeros((1, 3, 16, 16), np.float32))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
