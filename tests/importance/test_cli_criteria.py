"""Every criterion from the command line on the real CIFAR ResNet-20: compress -> export (parity) -> eval.

A cheap setting (2 calibration batches of 32, no fine-tuning). The default suite runs ``lasso`` (a
data-driven criterion with its default least-squares reconstruction); every registered name runs
under ``-m slow`` (about 10 minutes on 2 cores).
"""

import json

import pytest

from deploykit.cli.main import main
from deploykit.compression import criteria_names
from deploykit.importance import CRITERIA

DEFAULT = {"lasso"}
CHEAP = ["--target-macs", "0.5", "--calib-batches", "2", "--batch-size", "32", "--bn-batches", "1"]


def _run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.err


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in DEFAULT else pytest.mark.slow) for n in criteria_names()])
def test_criterion_end_to_end_on_resnet20(name, data_dir, resnet20_weights, tmp_path, capsys):
    art, rep = tmp_path / "art", tmp_path / "compress.json"
    code, err = _run(["compress", "cifar:resnet20", "--weights", resnet20_weights, "--data", f"cifar10:{data_dir / 'cifar10'}",
                      "--criterion", name, *CHEAP, "--out", art, "--json", rep], capsys)
    assert code == 0, err
    r = json.loads(rep.read_text())
    assert r["criterion"] == name and r["pruned"]["macs"] <= 0.5 * r["base"]["macs"]
    assert r["schedule"] == (getattr(CRITERIA.get(name)(), "schedule", None) or "oneshot")
    onnx_file, exp = tmp_path / "m.onnx", tmp_path / "export.json"
    code, err = _run(["export", art, "--onnx", onnx_file, "--data", f"cifar10:{data_dir / 'cifar10'}", "--json", exp], capsys)
    assert code == 0, err
    assert json.loads(exp.read_text())["max_rel_diff"] <= 1e-4
    ev = tmp_path / "eval.json"
    code, err = _run(["eval", onnx_file, "--data", f"cifar10:{data_dir / 'cifar10'}:test", "--json", ev], capsys)
    assert code == 0, err
    assert json.loads(ev.read_text())["top1"] == pytest.approx(r["pruned"]["top1"], abs=0.3)


def _bad(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in cap.err, cap.err
    return lines[0]


@pytest.mark.parametrize("extra, message", [
    (["--criterion", "ga", "--schedule", "progressive", "--data", "digits", "--finetune-epochs", "1"],
     "criterion 'ga' runs its own schedule (search); leave out --schedule progressive"),
    (["--criterion", "dcff", "--recover", "reconstruct", "--data", "digits"], "--recover reconstruct does not combine with criterion dcff"),
    (["--criterion", "l1", "--recover", "reconstrct"], "unknown recovery 'reconstrct' (did you mean 'reconstruct'?); valid: none, reconstruct"),
    (["--criterion", "l1", "--recover", "reconstruct"], "--recover reconstruct needs calibration data: pass --data SPEC"),
    (["--criterion", "ensemble"], "criterion 'ensemble' needs calibration data"),
    (["--criterion", "l1", "--schedule", "search"], "--schedule search runs only with --criterion blend or ga"),
    (["--criterion", "fisher", "--schedule", "dcff"], "--schedule dcff runs only with --criterion dcff"),
])
def test_bad_criterion_options(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    line = _bad(["compress", "digits:demo", "--target-macs", "0.5", "--out", out, *extra], capsys)
    assert message in line
    assert not out.exists()
