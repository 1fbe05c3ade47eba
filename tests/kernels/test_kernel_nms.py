"""YOLO head decode + class-aware NMS: the host build and the NumPy reference against
torchvision's ``batched_nms`` on constructed heads, and the letterbox mapped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from deploykit.errors import DeployKitError
from deploykit.kernels import reference
from deploykit.kernels.detection import DetectSettings, geometry_row, identity_geometry
from deploykit.kernels.params import letterbox_geometry


@pytest.fixture(params=["host", "reference"])
def backend(request, host):
    return host if request.param == "host" else reference


def head(boxes_xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A ``[1, 4 + nc, A]`` head output holding these x1y1x2y2 boxes and ``[A, nc]`` class scores."""
    b = np.asarray(boxes_xyxy, np.float64)
    cxcywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    return np.concatenate([cxcywh, np.asarray(scores, np.float64).T]).astype(np.float32)[None]


def expected(pred: np.ndarray, s: DetectSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torchvision's answer: best class per anchor above conf, batched_nms, best max_det (no clipping)."""
    img = torch.from_numpy(pred[0])
    score, cls = img[4:].max(0)
    cx, cy, w, h = img[:4]
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)
    m = score > s.conf
    keep = torchvision.ops.batched_nms(boxes[m], score[m], cls[m], s.iou)[: s.max_det]
    return boxes[m][keep].numpy(), score[m][keep].numpy(), cls[m][keep].numpy()


def unclipped(pred: np.ndarray) -> np.ndarray:
    """Geometry that maps nothing and clips nowhere near the constructed boxes."""
    return np.float32([[0, 0, 1, 1, 1e6, 1e6]])


def random_head(seed: int, anchors: int, classes: int, spread: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(10, spread, (anchors, 2))
    wh = rng.uniform(2, spread / 3, (anchors, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    return head(boxes, rng.uniform(0, 1, (anchors, classes)))


@pytest.mark.parametrize(("anchors", "classes", "iou"), [(300, 1, 0.5), (800, 5, 0.45), (2000, 80, 0.7), (1500, 3, 0.1)])
def test_matches_torchvision_batched_nms(backend, anchors, classes, iou):
    pred = random_head(anchors + classes, anchors, classes)
    s = DetectSettings(conf=0.2, iou=iou, max_det=10_000)
    (got,) = backend.detect(pred, unclipped(pred), s)
    boxes, scores, cls = expected(pred, s)
    assert len(got.scores) == len(scores) > 0
    np.testing.assert_array_equal(got.boxes, boxes)
    np.testing.assert_array_equal(got.scores, scores)
    np.testing.assert_array_equal(got.classes, cls)


def test_host_and_reference_agree_bit_for_bit_on_a_batch(host):
    pred = np.concatenate([random_head(s, 1200, 20) for s in range(3)])
    g = identity_geometry(3, 80, 90)  # clips: boxes run past 80x90
    s = DetectSettings(conf=0.1, iou=0.6, max_det=50)
    for h, r in zip(host.detect(pred, g, s), reference.detect(pred, g, s), strict=True):
        assert len(h.scores) == 50
        for a, b in ((h.boxes, r.boxes), (h.scores, r.scores), (h.classes, r.classes)):
            np.testing.assert_array_equal(a, b)
        assert (h.boxes >= 0).all() and (h.boxes[:, [0, 2]] <= 90).all() and (h.boxes[:, [1, 3]] <= 80).all()


def test_equal_scores_keep_the_lower_anchor(backend):
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]
    scores = [[0.8], [0.9], [0.9], [0.9]]  # anchors 1, 2, 3 tie; 1 and 2 overlap (IoU 0.68)
    pred = head(boxes, scores)
    s = DetectSettings(conf=0.1, iou=0.5)
    (got,) = backend.detect(pred, unclipped(pred), s)
    b, sc, c = expected(pred, s)
    np.testing.assert_array_equal(got.boxes, b)
    np.testing.assert_array_equal(got.boxes, np.float32([[1, 1, 11, 11], [50, 50, 60, 60]]))
    np.testing.assert_array_equal(got.scores, sc)


def test_identical_boxes_one_per_class(backend):
    box = [20, 30, 60, 90]
    # Same box four times: classes 0, 0, 2, 2 (scores on the class rows), plus a weak class-1 duplicate.
    scores = np.zeros((5, 3))
    scores[[0, 1, 2, 3, 4], [0, 0, 2, 2, 1]] = [0.6, 0.7, 0.5, 0.5, 0.3]
    pred = head([box] * 5, scores)
    s = DetectSettings(conf=0.25, iou=0.5)
    (got,) = backend.detect(pred, unclipped(pred), s)
    assert got.classes.tolist() == [0, 2, 1]
    np.testing.assert_array_equal(got.scores, np.float32([0.7, 0.5, 0.3]))
    b, sc, c = expected(pred, s)
    np.testing.assert_array_equal(got.classes, c)


def test_iou_exactly_at_the_threshold_keeps_both(backend):
    # IoU of [0,0,4,4] and [0,0,4,2] is 8 / 16 = 0.5 exactly; suppression needs IoU > iou.
    pred = head([[0, 0, 4, 4], [0, 0, 4, 2]], [[0.9], [0.8]])
    assert len(backend.detect(pred, unclipped(pred), DetectSettings(conf=0.1, iou=0.5))[0].scores) == 2
    assert len(backend.detect(pred, unclipped(pred), DetectSettings(conf=0.1, iou=0.49))[0].scores) == 1


def test_empty_inputs_give_empty_detections(backend):
    none = np.zeros((2, 4 + 3, 0), np.float32)  # no anchors at all
    out = backend.detect(none, identity_geometry(2, 32, 32), DetectSettings())
    assert [len(d.scores) for d in out] == [0, 0]
    assert out[0].boxes.shape == (0, 4) and out[0].classes.dtype == np.int32
    weak = random_head(1, 100, 4)
    weak[:, 4:] *= 0.2  # every score below conf
    assert len(backend.detect(weak, unclipped(weak), DetectSettings(conf=0.25))[0].scores) == 0
    assert backend.detect(np.zeros((0, 6, 10), np.float32), np.zeros((0, 6), np.float32), DetectSettings()) == []


def test_conf_is_strict_and_nan_scores_are_never_picked(backend):
    scores = [[0.25, 0.1], [np.nan, 0.3], [np.nan, np.nan]]
    pred = head([[0, 0, 5, 5], [20, 20, 30, 30], [40, 40, 50, 50]], scores)
    (got,) = backend.detect(pred, unclipped(pred), DetectSettings(conf=0.25))
    assert got.classes.tolist() == [1] and got.scores.tolist() == [pytest.approx(0.3)]


def test_max_det_and_max_candidates_take_the_best(backend):
    rng = np.random.default_rng(3)
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(50)], np.float64)  # disjoint
    scores = rng.permutation(50)[:, None] / 100 + 0.3
    pred = head(boxes, scores)
    (few,) = backend.detect(pred, unclipped(pred), DetectSettings(conf=0.1, max_det=7))
    np.testing.assert_allclose(few.scores, np.sort(scores[:, 0])[::-1][:7].astype(np.float32))
    (capped,) = backend.detect(pred, unclipped(pred), DetectSettings(conf=0.1, max_candidates=5))
    assert len(capped.scores) == 5 and capped.scores.min() == pytest.approx(0.75)


def test_boxes_map_back_through_the_letterbox_and_clip_to_the_image(backend):
    src_h, src_w, out = 200, 300, 160
    g = letterbox_geometry(src_h, src_w, out, out, True)  # 107 rows of image, padding above and below
    geom = np.float32([geometry_row(g, src_h, src_w)])
    # Boxes in the original image, one reaching across the padding (beyond the image's bottom).
    original = np.float32([[30, 40, 120, 150], [200, 150, 290, 260], [-20, -10, 50, 60]])
    sx, sy = g.width / src_w, g.height / src_h
    model = original * np.float32([sx, sy, sx, sy]) + np.float32([g.left, g.top, g.left, g.top])
    pred = head(model, np.eye(3)[:, :3] * 0.9)
    (got,) = backend.detect(pred, geom, DetectSettings(conf=0.5))
    expected_boxes = np.clip(original, 0, [src_w, src_h, src_w, src_h])
    assert got.classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(got.boxes, expected_boxes, atol=1e-3)


def test_bad_inputs_are_user_errors(backend):
    with pytest.raises(DeployKitError, match=r"4 \+ classes"):
        backend.detect(np.zeros((1, 4, 10), np.float32), identity_geometry(1, 8, 8), DetectSettings())
    with pytest.raises(DeployKitError, match="geometry"):
        backend.detect(np.zeros((2, 6, 10), np.float32), identity_geometry(1, 8, 8), DetectSettings())
    for bad in ({"conf": 1.5}, {"iou": float("nan")}, {"max_det": 0}, {"max_candidates": True}):
        with pytest.raises(DeployKitError, match=next(iter(bad))):
            DetectSettings(**bad)


@pytest.mark.gpu
def test_device_kernel_matches_the_host_build(host):
    from deploykit.cuda import gpu_status
    from deploykit.kernels import backend as kernel_backend

    if not gpu_status().ok:
        pytest.skip(f"needs a GPU with cuda-python: {gpu_status().reason}")
    cuda = kernel_backend("cuda")
    pred = np.concatenate([random_head(s, 8400, 80) for s in range(3)])
    g = identity_geometry(3, 90, 100)
    for s in (DetectSettings(conf=0.2, iou=0.5), DetectSettings(conf=0.05, iou=0.7, max_det=1000, max_candidates=900)):
        for d, h in zip(cuda.detect(pred, g, s), host.detect(pred, g, s), strict=True):
            np.testing.assert_array_equal(d.classes, h.classes)
            np.testing.assert_array_equal(d.scores, h.scores)
            np.testing.assert_array_equal(d.boxes, h.boxes)
    assert [len(d.scores) for d in cuda.detect(np.zeros((2, 6, 0), np.float32), identity_geometry(2, 8, 8),
                                               DetectSettings())] == [0, 0]
