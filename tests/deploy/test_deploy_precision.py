"""Precision in the ONNX graph: INT8 Q/DQ keeps ResNet-20's accuracy, the graphs have the
form TensorRT consumes, and FP16 keeps float32 I/O and sensitive ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from deploykit.data import load_dataset
from deploykit.errors import DeployKitError
from deploykit.evaluate import evaluate_onnx
from deploykit.export import precision as prec
from deploykit.export.onnx import export_onnx, read_sidecar, sidecar_path
from deploykit.zoo.base import BuiltModel, Preprocess


@pytest.fixture(scope="module")
def r20_int8(r20_fp32, cifar_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "r20_int8.onnx"
    info = prec.convert(r20_fp32, out, "int8", prec.calibration_from_spec(cifar_spec, 256))
    return out, info


def test_int8_resnet20_keeps_top1_within_1_5_points_on_lossless_1k(r20_fp32, r20_int8, cifar_spec):
    ds = load_dataset(f"{cifar_spec}:test:lossless")
    assert len(ds) == 1000
    fp32, int8 = evaluate_onnx(str(r20_fp32), ds), evaluate_onnx(str(r20_int8[0]), ds)
    assert fp32 > 90.0  # the published figure (91.5 measured), so the comparison means something
    assert fp32 - int8 <= 1.5, f"int8 {int8:.2f}% vs fp32 {fp32:.2f}%"


def test_int8_graph_is_symmetric_per_channel_qdq_with_float_bias(r20_int8):
    model = onnx.load(str(r20_int8[0]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert "QLinearConv" not in ops  # QDQ format, not QOperator
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 19
    for conv in convs:
        w_dq = producers[conv.input[1]]
        assert w_dq.op_type == "DequantizeLinear"
        scale, zero = inits[w_dq.input[1]], inits[w_dq.input[2]]
        w = inits[w_dq.input[0]]
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],)  # one scale per output channel
        assert not zero.any()  # symmetric
        if len(conv.input) > 2:  # a bias stays float: TensorRT quantizes none
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            assert inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
    side = read_sidecar(r20_int8[0])
    assert side["precision"] == "int8" and side["calibration"]["samples"] == 256
    assert r20_int8[1]["calibration"]["weights"] == "int8 symmetric per-channel"


def test_int8_verification_reports_agreement_on_real_data(r20_fp32, r20_int8, cifar_spec):
    ds = load_dataset(f"{cifar_spec}:test").subset(200)
    pre = Preprocess.from_dict(read_sidecar(r20_fp32)["preprocess"])
    check = prec.verify(r20_fp32, r20_int8[0], prec.preprocessed(ds.images, pre), ds.labels)
    assert check["n"] == 200 and check["top1_agreement"] >= 90.0
    assert 0 < check["max_abs_diff"] and abs(check["top1"] - check["top1_reference"]) <= 4.0


def test_fp16_resnet20_agrees_with_fp32(r20_fp32, cifar_spec, tmp_path):
    out = tmp_path / "r20_fp16.onnx"
    prec.convert(r20_fp32, out, "fp16")
    ds = load_dataset(f"{cifar_spec}:test").subset(200)
    pre = Preprocess.from_dict(read_sidecar(r20_fp32)["preprocess"])
    check = prec.verify(r20_fp32, out, prec.preprocessed(ds.images, pre), ds.labels)
    assert check["top1_agreement"] >= 99.0 and check["max_rel_diff"] < 1e-2


class SoftmaxHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.softmax(self.fc(x), dim=1)


def test_fp16_graph_has_float32_io_fp16_weights_and_fp32_sensitive_ops(tmp_path):
    built = BuiltModel(SoftmaxHead().eval(), "test:softmax", (1, 3, 8, 8), Preprocess(size=(8, 8)))
    fp32 = tmp_path / "m.onnx"
    export_onnx(built, fp32)
    out = tmp_path / "m16.onnx"
    info = prec.convert(fp32, out, "fp16")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    inits = {i.name: i for i in model.graph.initializer}
    assert inits[conv.input[1]].data_type == f16
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert types[softmax.input[0]] == f32 and "Softmax" in info["kept_fp32_ops"]
    assert any(n.op_type == "Cast" for n in model.graph.node)
    x = built.example_input(2).numpy()
    from deploykit.export.onnx import ort_session

    np.testing.assert_allclose(ort_session(out).run(None, {"input": x})[0], ort_session(fp32).run(None, {"input": x})[0],
                               atol=5e-3)


def test_int8_without_calibration_and_unknown_precision_are_user_errors(random_onnx, tmp_path):
    with pytest.raises(DeployKitError, match="calib-data"):
        prec.convert(random_onnx, tmp_path / "a.onnx", "int8")
    with pytest.raises(DeployKitError, match="valid: fp16, fp32, int8"):
        prec.convert(random_onnx, tmp_path / "b.onnx", "int4")
    bad = prec.Calibration(images=np.zeros((4, 32, 32, 3), np.uint8), method="magic")
    with pytest.raises(DeployKitError, match="valid: entropy, minmax, percentile"):
        prec.convert(random_onnx, tmp_path / "c.onnx", "int8", bad)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no sidecar


def test_int8_on_random_images_still_writes_a_loadable_qdq_graph(random_onnx, tmp_path):
    calib = prec.Calibration(images=np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), spec="random")
    out = tmp_path / "q.onnx"
    prec.convert(random_onnx, out, "int8", calib)
    assert sidecar_path(out).is_file() and read_sidecar(out)["calibration"]["data"] == "random"


class TinyNet(nn.Module):
    """Three convolutions and a linear head on 8x8 images: quantizes in a second.

    One output channel of ``c1`` is 200 times larger than the others: ``c2``'s input,
    quantized per tensor, then keeps almost no resolution for the other seven channels
    (the classic activation outlier), so ``c2`` is the layer to keep in float."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 64)  # many close classes: int8 noise flips some top-1s
        with torch.no_grad():
            self.c1.weight[0] *= 200.0
            self.c2.weight[:, 0] /= 200.0  # the outlier channel still matters no more than the others
            self.fc.weight.normal_(0.0, 3.0)  # classes spread over the feature space: varied, close top-1s
            self.fc.bias.zero_()

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = self.c3(x).mean(dim=(2, 3))
        return self.fc(x - x.mean(dim=1, keepdim=True))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(fp32 onnx, calibration images, validation)``: labels are FP32's own top-1, so FP32 scores 100%."""
    from deploykit.export.int8 import Validation
    from deploykit.export.onnx import ort_session

    built = BuiltModel(TinyNet().eval(), "test:tiny", (1, 3, 8, 8), Preprocess(size=(8, 8)))
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(built, path)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    x = np.concatenate(prec.preprocessed(images, built.preprocess))
    labels = ort_session(path).run(None, {"input": x})[0].argmax(1)
    return path, calib, Validation(images, labels, sensitivity_samples=100)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_each_calibration_method_writes_its_qdq_graph(tiny, tmp_path, method):
    path, calib, _ = tiny
    out = tmp_path / "q.onnx"
    info = prec.convert(path, out, "int8", prec.Calibration(images=calib, method=method, spec="random"))
    assert info["calibration"]["method"] == method and read_sidecar(out)["calibration"]["method"] == method
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("DequantizeLinear") >= 4  # every conv's weights and the head


def test_default_calibration_is_percentile():
    # The evidence is in benchmarks/results/precision.md (robust to outlier calibration images).
    assert prec.Calibration(images=np.zeros((1, 8, 8, 3), np.uint8)).method == "percentile"


def test_entropy_calibration_really_searches_a_threshold(tiny, tmp_path):
    """ONNX Runtime's quantize_static gives its entropy calibrator 128 bins and 128 quantized
    bins: a single candidate, the full range, i.e. minmax. deploykit's must differ."""
    from onnx import numpy_helper

    path, calib, _ = tiny
    scales = {}
    for method in ("minmax", "entropy"):
        out = tmp_path / f"{method}.onnx"
        prec.convert(path, out, "int8", prec.Calibration(images=calib, method=method))
        model = onnx.load(str(out))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        scales[method] = {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
                          if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}
    assert scales["entropy"] != scales["minmax"]
    assert all(scales["entropy"][k] <= scales["minmax"][k] * (1 + 1e-6) for k in scales["minmax"])  # clips, never widens


def test_kl_threshold_clips_outliers_and_ignores_the_relu_zeros():
    from deploykit.export.int8 import kl_threshold

    rng = np.random.default_rng(0)
    # A ReLU output: half exact zeros, the rest uniform on (0, 1], and one outlier at 8.
    x = np.concatenate([np.zeros(50_000), rng.uniform(0, 1, 50_000), [8.0]])
    hist, edges = np.histogram(np.abs(x), bins=2048)
    t = kl_threshold(hist, edges)
    assert 0.95 <= t <= 1.2  # the bulk kept whole, the outlier clipped; the zero spike pulls nothing down
    # Gaussian: the threshold sits in the tail, well inside the largest magnitude.
    g = np.abs(rng.standard_normal(200_000))
    hist, edges = np.histogram(g, bins=2048)
    assert 2.0 <= kl_threshold(hist, edges) < g.max()
    # Too few bins to search: the whole range.
    assert kl_threshold(np.ones(100), np.linspace(0, 5, 101)) == 5.0


def test_a_generous_budget_keeps_every_layer_int8(tiny, tmp_path):
    path, calib, val = tiny
    info = prec.convert(path, tmp_path / "q.onnx", "int8",
                        prec.Calibration(images=calib, max_drop=100.0, validation=val))
    budget = info["calibration"]["budget"]
    assert info["calibration"]["kept_float"] == [] and budget["met"] and budget["sensitivity"] == []
    assert budget["fp32_top1"] == 100.0 and budget["validation_images"] == 300


def test_a_zero_budget_keeps_sensitive_layers_in_float_until_it_holds(tiny, tmp_path):
    from deploykit.export.int8 import WEIGHT_OPS
    from deploykit.export.onnx import ort_session

    path, calib, val = tiny
    out = tmp_path / "q.onnx"
    info = prec.convert(path, out, "int8", prec.Calibration(images=calib, method="minmax", max_drop=0.0, validation=val))
    budget, kept = info["calibration"]["budget"], info["calibration"]["kept_float"]
    assert budget["all_int8_top1"] < 100.0  # quantizing everything loses something on these images
    assert budget["met"] and budget["top1"] == 100.0 and kept
    rows = budget["sensitivity"]
    weight_nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in WEIGHT_OPS]
    assert sorted(r["node"] for r in rows) == sorted(weight_nodes)
    assert rows[0]["node"] == "/c2/Conv"  # the layer fed by the outlier channel (TinyNet's docstring)
    assert [r["recovered"] for r in rows] == sorted((r["recovered"] for r in rows), reverse=True)
    assert kept == [r["node"] for r in rows[: len(kept)]]  # most sensitive first
    # Independently: the written graph scores what the budget says, and the kept layers have no Q/DQ on weights.
    x = np.concatenate(prec.preprocessed(val.images, Preprocess(size=(8, 8))))
    assert (ort_session(out).run(None, {"input": x})[0].argmax(1) == val.labels).all()
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in kept:
            assert producers.get(node.input[1]) is None or producers[node.input[1]].op_type != "DequantizeLinear"


def test_max_drop_without_held_out_images_is_a_user_error(tiny, tmp_path):
    path, calib, _ = tiny
    with pytest.raises(DeployKitError, match="held-out"):
        prec.convert(path, tmp_path / "q.onnx", "int8", prec.Calibration(images=calib, max_drop=0.5))
    assert list(tmp_path.iterdir()) == []
