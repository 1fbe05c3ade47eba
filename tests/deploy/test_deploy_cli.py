"""The deploy options of the CLI: export --precision/--trt/--bundle, eval --backend,
bench --backend. Bad input: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

from deploykit.cli.main import main as cli
from deploykit.runtime.trt import trt_status

no_gpu = pytest.mark.skipif(trt_status().ok, reason="a GPU and TensorRT are present")


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deploykit"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize(("args", "needles"), [
    (["--precision", "int8"], ["needs --calib-data"]),
    (["--precision", "bf16"], ["unknown precision 'bf16'", "fp16, fp32, int8"]),
    (["--bundle", "coral", "DIR"], ["unknown bundle target 'coral'", "jetson"]),
], ids=["int8-no-calib", "bad-precision", "bad-target"])
def test_bad_export_options_write_nothing(tmp_path, capsys, args, needles):
    onnx = tmp_path / "m.onnx"
    args = [a.replace("DIR", str(tmp_path / "b")) for a in args]
    assert cli(["export", "cifar:resnet20", "--onnx", str(onnx), *args]) == 2
    one_line_error(capsys, *needles)
    assert list(tmp_path.iterdir()) == []


@no_gpu
def test_trt_without_gpu_is_refused_before_anything_is_written(tmp_path, capsys):
    # Issue 11: --trt without a usable GPU is checked before exporting, so no ONNX file is left behind.
    onnx, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    assert cli(["export", "cifar:resnet20", "--onnx", str(onnx), "--trt", str(engine)]) == 2
    one_line_error(capsys, "needs a CUDA GPU", "nothing was written", "build the engine on the target")
    assert list(tmp_path.iterdir()) == []


def test_fp16_export_with_bundle_then_eval_and_bench(tmp_path, capsys, cifar_spec):
    onnx, report = tmp_path / "m16.onnx", tmp_path / "r.json"
    rc = cli(["export", "cifar:resnet20", "--onnx", str(onnx), "--precision", "fp16", "--data", cifar_spec,
              "--samples", "48", "--bundle", "jetson", str(tmp_path / "bundle"), "--json", str(report)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    check = result["precision_check"]
    assert result["precision"] == "fp16" and check["real_data"] and check["n"] == 48
    assert {"max_abs_diff", "max_rel_diff", "top1_agreement", "top1", "top1_reference"} <= set(check)
    assert result["max_rel_diff"] < 1e-4  # fp32 parity with PyTorch still checked first
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["precision"] == "fp16"
    assert cli(["eval", str(onnx), "--data", cifar_spec, "--limit", "64", "--backend", "ort", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["backend"] == "ort"
    assert cli(["bench", str(onnx), "--backend", "ort", "--runs", "3", "--warmup", "1", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["results"][0]["batch"] == 1


@no_gpu
def test_eval_and_bench_on_trt_without_gpu(tmp_path, capsys, random_onnx):
    assert cli(["eval", str(random_onnx), "--data", "digits", "--backend", "trt"]) == 2
    one_line_error(capsys, "needs a CUDA GPU")
    assert cli(["bench", str(random_onnx), "--backend", "trt"]) == 2
    one_line_error(capsys, "needs a CUDA GPU", str(random_onnx))


def test_bench_unknown_backend_and_import_with_a_model(capsys, random_onnx, tmp_path):
    assert cli(["bench", str(random_onnx), "--backend", "tvm"]) == 2
    one_line_error(capsys, "unknown backend 'tvm'")
    assert cli(["bench", str(random_onnx), "--import", str(tmp_path / "r.json")]) == 2
    one_line_error(capsys, "give no model")
