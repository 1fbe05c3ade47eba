"""Detectors: FPN channels coupled across levels through the shared heads; the pruned
detector still detects; backbone + FPN export with parity."""

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import deploykit
from deploykit.graph.groups import ModelGraph
from deploykit.zoo.detection import wrap_detector


def small_retinanet():
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return torchvision.models.detection.RetinaNet(backbone, num_classes=3, min_size=128, max_size=128)


def test_retinanet_fpn_levels_are_one_group_with_the_shared_heads():
    built = wrap_detector(small_retinanet(), "small-retinanet", (1, 3, 128, 128))
    g = ModelGraph(built.traced, built.example_input())
    fpn_out = g.get("backbone.fpn.layer_blocks.0.0")
    layers = set(fpn_out.layers)
    assert {f"backbone.fpn.layer_blocks.{i}.0" for i in range(3)} <= layers
    assert {"backbone.fpn.extra_blocks.p6", "head.classification_head.conv.0.0", "head.regression_head.conv.0.0"} <= layers
    assert fpn_out.prunable
    lateral = g.get("backbone.fpn.inner_blocks.0.0")
    assert {f"backbone.fpn.inner_blocks.{i}.0" for i in range(3)} <= set(lateral.layers)


@pytest.fixture(scope="module")
def pruned_frcnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "frcnn"
    report = deploykit.compress(model="torchvision-detection:fasterrcnn_mobilenet_v3_large_320_fpn", out=str(out),
                                target_macs=0.5, criterion="l1", round_to=8, input_shape="1x3x160x160")
    return out, report


def test_pruned_detector_detects_and_exports(pruned_frcnn, tmp_path):
    out, report = pruned_frcnn
    assert report["pruned"]["macs"] <= 0.5 * report["base"]["macs"]
    built = deploykit.load(str(out))
    det = built.model
    # The FPN output width shrank, and every consumer followed.
    fpn_width = det.backbone.fpn.layer_blocks[0][0].out_channels
    assert fpn_width < 256 and fpn_width % 8 == 0
    assert det.rpn.head.conv[0][0].in_channels == fpn_width
    assert det.roi_heads.box_head.fc6.in_features == fpn_width * 7 * 7
    det.roi_heads.score_thresh = 0.0  # random weights: keep every box to see the format
    with torch.no_grad():
        result = det([torch.rand(3, 150, 200)])[0]
    assert set(result) == {"boxes", "labels", "scores"} and result["boxes"].shape[1] == 4 and len(result["boxes"]) > 0
    res = deploykit.export_onnx(built, str(tmp_path / "fpn.onnx"))
    from deploykit.export.onnx import check_parity, read_sidecar

    side = read_sidecar(tmp_path / "fpn.onnx")
    assert side["task"] == "detection" and len(side["outputs"]) == 3  # two FPN levels and the pool level
    assert check_parity(built.exported, tmp_path / "fpn.onnx", [built.example_input()])["max_rel_diff"] <= 1e-4
    assert res["opset"] == 17
