"""Real timm and Ultralytics models (random init, small inputs): compress at half the MACs with l2,
then export with parity. A construct deploykit cannot follow is left whole; nothing crashes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None or importlib.util.find_spec("ultralytics") is None,
                                reason="needs the timm and yolo extras")

FAST = [("timm:ghostnet_050", "1x3x32x32")]
# efficientvit at 64x64 has too few MACs outside its whole-left attention stream to reach half: 128x128, as the zoo table.
SLOW = [("timm:ghostnet_100", "1x3x64x64"), ("timm:efficientvit_m0", "1x3x128x128")] + [
    (f"timm:{n}", "1x3x64x64") for n in ("cspresnet50", "res2net50_26w_4s", "rexnet_100", "fastvit_t8", "mobilevitv2_050",
                                         "convnext_atto", "repvgg_a0")] + [
    ("ultralytics:yolov8n.yaml", "1x3x64x64"), ("ultralytics:yolo11n.yaml", "1x3x64x64"),
    ("ultralytics:yolov8n-cls.yaml", "1x3x64x64")]
CASES = [pytest.param(*c, id=c[0]) for c in FAST] + [pytest.param(*c, id=c[0], marks=pytest.mark.slow) for c in SLOW]


@pytest.mark.parametrize("spec,shape", CASES)
def test_compress_half_the_macs_and_export_with_parity(spec: str, shape: str, tmp_path: Path):
    import deploykit
    from deploykit.export.onnx import check_parity, export_onnx

    report = deploykit.compress(model=spec, out=str(tmp_path / "a"), target_macs=0.5, criterion="l2", input_shape=shape)
    assert report["ratios"]["macs"] <= 0.5
    ver = report["verification"]
    assert ver["plan_verified"]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["verification"]["not_followed"] == ver["not_followed"]
    built = deploykit.load(str(tmp_path / "a"))
    export_onnx(built, tmp_path / "m.onnx")
    assert check_parity(built.exported, tmp_path / "m.onnx", [built.example_input()])["max_rel_diff"] <= 1e-4


def test_ultralytics_c2f_and_c3k2_blocks_are_followed_exactly():
    """YOLOv8's C2f and YOLO11's C3k2: chunk(2, 1), the second half read by the bottlenecks and the concat."""
    from torch import nn
    from ultralytics.nn.modules.block import C2f, C3k2

    from tests.graph.test_followed_or_whole import _check

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), C2f(16, 32, n=2, shortcut=True),
                          C3k2(32, 32, n=1, c3k=True, shortcut=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
    graph, failed = _check(model)
    assert not failed
    for block in ("1", "2"):
        g = graph.get(f"{block}.cv1.conv")
        assert g.prunable and g.atom_size == 2  # channel i of one half goes with channel i of the other
    # The backbone block's residuals tie the second half to each bottleneck's output conv.
    assert {"1.m.0.cv2.conv", "1.m.1.cv2.conv", "1.cv2.conv"} <= set(graph.get("1.cv1.conv").layers)
