"""The Engine serving detectors: a constructed YOLO head exported to ONNX (known boxes come
back in each image's own pixels through the letterbox), and a tiny Ultralytics YOLOv8
end to end (export with parity, sidecar, Engine on ONNX Runtime and on PyTorch)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from deploykit.engine import Detections, Engine
from deploykit.errors import DeployKitError
from deploykit.export.onnx import check_parity, export_onnx, read_sidecar, sidecar_path
from deploykit.kernels.detection import DetectSettings
from deploykit.kernels.params import letterbox_geometry
from deploykit.zoo.base import BuiltModel, Preprocess

SIDE = 96
YOLO_PRE = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=255.0)


class ConstantHead(nn.Module):
    """A "detector" whose decoded YOLO output is fixed: the boxes and scores are known."""

    output_format = "yolo"

    def __init__(self, pred: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("pred", torch.from_numpy(pred))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred.expand(x.shape[0], -1, -1) + 0.0 * x.mean()


def to_model(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """Original-image x1y1x2y2 boxes → model-input pixels, through the kernels' letterbox."""
    g = letterbox_geometry(h, w, SIDE, SIDE, True)
    sx, sy = g.width / w, g.height / h
    return boxes * np.float32([sx, sy, sx, sy]) + np.float32([g.left, g.top, g.left, g.top])


def head_of(model_boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    b = model_boxes.astype(np.float64)
    cxcywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    return np.concatenate([cxcywh, scores.T]).astype(np.float32)[None]


# Three objects in a 200x300 (HxW) frame; a weaker duplicate of the first (same class, suppressed),
# a same-place box of another class (kept), and one below the confidence threshold.
H, W = 200, 300
BOXES = np.float32([[30, 40, 120, 150], [200, 20, 290, 190], [31, 41, 119, 149], [30, 40, 120, 150], [5, 5, 50, 50]])
SCORES = np.zeros((5, 3), np.float32)
SCORES[[0, 1, 2, 3, 4], [0, 1, 0, 2, 1]] = [0.9, 0.8, 0.6, 0.5, 0.1]


@pytest.fixture(scope="module")
def constant_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "const.onnx"
    pre = Preprocess(size=(SIDE, SIDE), **YOLO_PRE)
    built = BuiltModel(ConstantHead(head_of(to_model(BOXES, H, W), SCORES)), "tests:constant_head",
                       (1, 3, SIDE, SIDE), pre, labels=["cat", "dog", "car"], task="detection")
    export_onnx(built, path)
    return path


def test_sidecar_describes_the_yolo_head(constant_onnx):
    side = read_sidecar(constant_onnx)
    assert side["task"] == "detection"
    assert side["detection"] == {"head": "yolo", "conf": 0.25, "iou": 0.7, "max_det": 300, "max_candidates": 30000}
    assert DetectSettings() == DetectSettings(**{k: v for k, v in side["detection"].items() if k != "head"})


def test_known_boxes_come_back_in_the_original_pixels(constant_onnx):
    with Engine(constant_onnx, backend="ort", letterbox=True) as engine:
        frame = np.zeros((H, W, 3), np.uint8)
        det = engine.predict(frame)
    assert isinstance(det, Detections) and len(det) == 3
    assert det.labels == ["cat", "dog", "car"] and det.classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(det.scores, [0.9, 0.8, 0.5], rtol=1e-6)
    np.testing.assert_allclose(det.boxes, BOXES[[0, 1, 3]], atol=2e-3)


def test_each_image_of_a_list_maps_through_its_own_letterbox(constant_onnx):
    # The head is the same for every image; a taller frame maps the same model boxes elsewhere.
    with Engine(constant_onnx, backend="ort", letterbox=True) as engine:
        dets = engine.predict([np.zeros((H, W, 3), np.uint8), np.zeros((400, 100, 3), np.uint8)])
    g = letterbox_geometry(400, 100, SIDE, SIDE, True)
    model = to_model(BOXES[[0, 1, 3]], H, W)
    back = (model - np.float32([g.left, g.top, g.left, g.top])) * np.float32([100 / g.width, 400 / g.height] * 2)
    expected = np.clip(back, 0, [100, 400, 100, 400])
    np.testing.assert_allclose(dets[0].boxes, BOXES[[0, 1, 3]], atol=2e-3)
    np.testing.assert_allclose(dets[1].boxes, expected, atol=2e-3)


def test_thresholds_can_be_overridden(constant_onnx):
    with Engine(constant_onnx, backend="ort", letterbox=True,
                detection=DetectSettings(conf=0.05, iou=0.99, max_det=10)) as engine:
        det = engine.predict(np.zeros((H, W, 3), np.uint8))
    assert sorted(det.scores.tolist()) == pytest.approx(sorted(SCORES.max(1).tolist()))
    with pytest.raises(DeployKitError, match="DetectSettings"):
        Engine(constant_onnx, backend="ort", detection={"conf": 0.5})  # type: ignore[arg-type]
    with Engine(constant_onnx, backend="ort") as engine, pytest.raises(DeployKitError, match="max_det"):
        engine.predict(np.zeros((H, W, 3), np.uint8), k=3)


def test_a_detector_without_a_servable_head_is_refused_in_one_line(tmp_path, constant_onnx):
    path = tmp_path / "plain.onnx"
    path.write_bytes(constant_onnx.read_bytes())
    side = json.loads(sidecar_path(constant_onnx).read_text())
    side.pop("detection")
    sidecar_path(path).write_text(json.dumps(side))
    with Engine(path, backend="ort") as engine:
        with pytest.raises(DeployKitError, match="cannot decode"):
            engine.predict(np.zeros((32, 32, 3), np.uint8))
        assert engine(np.zeros((1, 3, SIDE, SIDE), np.float32)).shape == (1, 7, 5)  # raw outputs still run
    side["task"], side["detection"] = "classification", {"head": "yolo"}
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(DeployKitError, match="task detection"):
        Engine(path, backend="ort")


def test_labels_must_match_the_head_classes(tmp_path, constant_onnx):
    path = tmp_path / "bad.onnx"
    path.write_bytes(constant_onnx.read_bytes())
    side = json.loads(sidecar_path(constant_onnx).read_text())
    side["labels"] = ["cat", "dog"]
    sidecar_path(path).write_text(json.dumps(side))
    # Refused when the ONNX output's width is static, else at the first predict: never mislabelled.
    with pytest.raises(DeployKitError, match="2 labels but the model has 3"):
        with Engine(path, backend="ort") as engine:
            engine.predict(np.zeros((H, W, 3), np.uint8))


# -- a real (tiny, random) Ultralytics YOLOv8 --------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_built():
    if importlib.util.find_spec("ultralytics") is None:  # not importorskip: a direct import patches PIL and torch
        pytest.skip("the yolo extra (ultralytics) is not installed")
    from deploykit.zoo import build_model
    from deploykit.zoo.yolo_export import YoloDecoded

    built = build_model("ultralytics:yolov8n.yaml,nc=3", input_shape=(1, 3, SIDE, SIDE))
    if not isinstance(built.exported, YoloDecoded):
        built.export_module = YoloDecoded(built.model).eval()
    # Ultralytics' own init leaves PyTorch's default conv init, under which the features fade to
    # ~1e-8 by the head (every anchor scores alike, all ties); He init keeps them distinct.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in built.model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, generator=g)
    return built


def test_yolo_exports_its_decoded_head_with_parity(yolo_built, tmp_path):
    path = tmp_path / "y8.onnx"
    export_onnx(yolo_built, path)
    x = [yolo_built.example_input(2, seed=s).clamp(0, 1) for s in range(2)]
    parity = check_parity(yolo_built.exported, path, x)
    assert parity["max_rel_diff"] < 1e-4
    side = read_sidecar(path)
    assert side["task"] == "detection" and side["detection"]["head"] == "yolo"
    assert side["preprocess"]["mean"] == [0.0, 0.0, 0.0] and side["preprocess"]["std"] == [1.0, 1.0, 1.0]
    # The decoded layout: [N, 4 + nc, A] with A = (96/8)^2 + (96/16)^2 + (96/32)^2
    with torch.no_grad():
        out = yolo_built.exported(x[0])
    assert out.shape == (2, 4 + 3, 144 + 36 + 9)
    assert (out[:, 4:] >= 0).all() and (out[:, 4:] <= 1).all()  # sigmoid scores


def test_yolo_engine_matches_ultralytics_postprocessing(yolo_built, tmp_path):
    from deploykit.zoo.yolo import import_ultralytics

    import_ultralytics()
    from ultralytics.utils import nms as unms
    from ultralytics.utils.ops import scale_boxes

    path = tmp_path / "y8.onnx"
    export_onnx(yolo_built, path)
    frame = np.random.default_rng(0).integers(0, 256, (120, 170, 3), dtype=np.uint8)
    settings = DetectSettings(conf=0.001, iou=0.7, max_det=50)  # random weights: low scores
    with Engine(path, backend="ort", letterbox=True, detection=settings) as engine:
        det = engine.predict(frame)
        x = engine.preprocess(frame)
        head = engine(x)
    assert len(det) > 0
    ref = unms.non_max_suppression(torch.from_numpy(head), conf_thres=0.001, iou_thres=0.7, max_det=50)[0]
    g = letterbox_geometry(120, 170, SIDE, SIDE, True)
    boxes = scale_boxes((SIDE, SIDE), ref[:, :4].clone(), (120, 170),
                        ratio_pad=((g.height / 120, g.width / 170), (g.left, g.top)))
    # Same survivors, same order (scores distinct at random init), boxes within rounding of the letterbox.
    np.testing.assert_array_equal(det.classes, ref[:, 5].int().numpy())
    np.testing.assert_allclose(det.scores, ref[:, 4].numpy(), rtol=1e-6)
    np.testing.assert_allclose(det.boxes, boxes.numpy(), atol=0.05)


def test_yolo_engine_on_the_artifact_runs_in_pytorch(yolo_built, tmp_path):
    from deploykit.zoo import build_model
    from deploykit.zoo.yolo_export import YoloDecoded

    if not isinstance(build_model("ultralytics:yolov8n.yaml,nc=3", input_shape=(1, 3, 32, 32)).exported, YoloDecoded):
        pytest.skip("the ultralytics: spec does not export YoloDecoded yet (an artifact rebuilds from the spec)")
    from deploykit.prune.artifact import save_artifact
    from deploykit.prune.plan import make_plan
    from deploykit.graph.groups import ModelGraph

    graph = ModelGraph(yolo_built.traced, yolo_built.example_input())
    save_artifact(tmp_path / "art", yolo_built.model, make_plan(yolo_built, graph, criterion="l2", ignore=[]), {})
    with Engine(tmp_path / "art", backend="torch") as engine:
        assert engine.task == "detection" and engine.detection == DetectSettings()
        det = engine.predict(np.zeros((50, 80, 3), np.uint8))
    assert isinstance(det, Detections) and det.boxes.shape[1] == 4
