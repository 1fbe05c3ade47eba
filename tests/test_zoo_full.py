"""Full-size models: compress to half the MACs, then export with parity (``make test-all``)."""

import json

import pytest

from deploykit.cli.main import main
from tests.zoo_cases import CLASSIFIERS

DETECTORS = ["torchvision-detection:fasterrcnn_mobilenet_v3_large_fpn", "torchvision-detection:retinanet_resnet50_fpn"]
SPECS = [c.spec for c in CLASSIFIERS] + DETECTORS


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_compress_then_export_full_size(spec, tmp_path, capsys):
    out, rep, exp = tmp_path / "art", tmp_path / "c.json", tmp_path / "e.json"
    assert main(["compress", spec, "--criterion", "l2", "--target-macs", "0.5", "--round-to", "8",
                 "--out", str(out), "--json", str(rep)]) == 0, capsys.readouterr().err
    report = json.loads(rep.read_text())
    assert report["pruned"]["macs"] <= 0.5 * report["base"]["macs"]
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--json", str(exp)]) == 0, capsys.readouterr().err
    assert json.loads(exp.read_text())["max_rel_diff"] <= 1e-4
