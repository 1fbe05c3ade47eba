"""Bad input: one line on stderr, exit 2, no traceback, nothing written."""

import pytest
from safetensors.torch import save_file

from deploykit.cli.main import main
from deploykit.compression import criteria_names


def run_bad(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert code == 2, cap.err
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.err
    return lines[0]


def compress_args(out, *extra):
    return ["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l1", "--out", out, *extra]


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "torchvision:resnet81"], "did you mean 'resnet18'"),
        (["inspect", "nosuchfamily"], "unknown model spec 'nosuchfamily'; valid: cifar:NAME"),
        (["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "fishr", "--out", "{out}"],
         "unknown criterion 'fishr' (did you mean 'fisher'?); valid: " + ", ".join(criteria_names())),
        (["compress", "cifar:resnet20", "--target-macs", "1.5", "--out", "{out}"], "--target-macs 1.5 is outside (0, 1]"),
        (["compress", "cifar:resnet20", "--target-macs", "0", "--out", "{out}"], "--target-macs 0.0 is outside (0, 1]"),
        (compress_args("{out}", "--data", "mnist:/x"), "unknown data spec 'mnist:/x'; valid: cifar10:DIR"),
        (compress_args("{out}", "--data", "cifar10:/nonexistent"), "no cifar10_train_lossless_*.npz shards in /nonexistent"),
        (compress_args("{out}", "--normalize", "bytes"), "unknown normalization 'bytes'"),
        (compress_args("{out}", "--latency-checks", "-1"), "--latency-checks -1: Input should be greater than or equal to 0"),
        (["compress", "cifar:resnet20", "--target-macs", "0.5", "--out", "{out}"], "criterion 'fisher' needs calibration data"),
        (compress_args("{out}", "--weights", "{tmp}/missing.th"), "missing.th does not exist"),
        (compress_args("{out}", "--input-shape", "1x1x32x32"), "rejects input shape 1x1x32x32"),
        (compress_args("{out}", "--ignore", "layer9"), "--ignore 'layer9' names no module"),
        (["compress", "cifar:resnet20", "--out", "{out}"], "Missing option '--target-macs'"),
        (["eval", "cifar:resnet20", "--data", "digits:val"], "split 'val' is not one of train, test"),
        (["bench", "{tmp}/none.onnx"], "ONNX file {tmp}/none.onnx does not exist"),
        (["bench", "{tmp}/none.onnx", "--batch", "1,x"], "--batch '1,x' must be positive integers"),
        (["export", "cifar:resnet20", "--onnx", "{tmp}/m.onnx", "--opset", "3"], "opset 3 is not supported"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    args = [a.replace("{out}", str(out)).replace("{tmp}", str(tmp_path)) for a in args]
    line = run_bad(args, capsys)
    assert message.replace("{tmp}", str(tmp_path)) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _weights_file(tmp_path, kind):
    from deploykit.zoo import build_model

    sd = build_model("cifar:resnet20", pretrained=False).model.state_dict()
    p = tmp_path / "w.safetensors"
    if kind == "mismatch":
        sd = {k: v for k, v in sd.items() if not k.startswith("linear")}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    if kind == "truncated":
        p.write_bytes(p.read_bytes()[:5000])
    if kind == "corrupt":
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage!!!!!!!" + bytes(100))
    return p


@pytest.mark.parametrize(
    "kind, message",
    [("truncated", "truncated or corrupt"), ("corrupt", "truncated or corrupt"),
     ("mismatch", "do not match the architecture: missing: linear.bias, linear.weight")],
)
def test_bad_weights(kind, message, tmp_path, capsys):
    w = _weights_file(tmp_path, kind)
    out = tmp_path / "out"
    line = run_bad(compress_args(out, "--weights", w), capsys)
    assert message in line
    assert not out.exists()


def test_existing_output_needs_force_and_survives_failure(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    line = run_bad(compress_args(out), capsys)
    assert "exists and is not empty; pass --force" in line
    # With --force but a failing run, the old output is untouched.
    line = run_bad(compress_args(out, "--force", "--weights", tmp_path / "missing.th"), capsys)
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # With --force and a good run, it is replaced once complete.
    assert main(compress_args(str(out), "--force")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plan.json", "report.json"]
