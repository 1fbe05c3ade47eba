import onnx
import pytest
import torch
import torchvision

from deploykit.errors import DeployKitError
from deploykit.export.onnx import check_parity, export_onnx, read_sidecar
from deploykit.zoo.base import BuiltModel, Preprocess


@pytest.mark.parametrize("opset", [13, 17])
def test_opset_written_is_the_one_asked_for(tmp_path, opset):
    # torch 2.14's default (dynamo) exporter writes 18 when asked for 17 on torchvision models.
    model = torchvision.models.mobilenet_v3_small(width_mult=0.5).eval()
    built = BuiltModel(model, "torchvision:mobilenet_v3_small", (1, 3, 64, 64), Preprocess(size=(64, 64)))
    res = export_onnx(built, tmp_path / "m.onnx", opset=opset)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert res["opset"] == opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    parity = check_parity(model, tmp_path / "m.onnx", [built.example_input(1), built.example_input(3, seed=2)])
    assert parity["max_rel_diff"] < 1e-4
    side = read_sidecar(tmp_path / "m.onnx")
    assert side["preprocess"]["size"] == [64, 64] and side["opset"] == opset


def test_parity_detects_a_different_model(tmp_path):
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    built = BuiltModel(a, "x", (1, 3, 8, 8), Preprocess(size=(8, 8)))
    export_onnx(built, tmp_path / "a.onnx")
    with torch.no_grad():
        a[0].weight.add_(0.1)
    assert check_parity(a, tmp_path / "a.onnx", [built.example_input()])["max_rel_diff"] > 1e-3


def test_bad_opset_and_missing_sidecar(tmp_path):
    built = BuiltModel(torch.nn.Conv2d(3, 4, 3).eval(), "x", (1, 3, 8, 8), Preprocess(size=(8, 8)))
    with pytest.raises(DeployKitError, match="opset 99 is not supported"):
        export_onnx(built, tmp_path / "a.onnx", opset=99)
    assert not (tmp_path / "a.onnx").exists()
    with pytest.raises(DeployKitError, match="has no sidecar"):
        read_sidecar(tmp_path / "nothing.onnx")
