"""Fine-tuning YOLO detectors: the model's own loss goes down, head KD is zero between equal
heads, the synthetic CIFAR-10 detection set is what it claims, and compress runs a detector
end to end (prune, fine-tune with KD, mAP@0.5, export with parity, Engine)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

# find_spec, not importorskip: importing ultralytics directly would patch PIL and torch for the whole session.
if importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("torchmetrics") is None:
    pytest.skip("the yolo extra (ultralytics, torchmetrics) is not installed", allow_module_level=True)

from deploykit.data import load_dataset  # noqa: E402
from deploykit.errors import DeployKitError  # noqa: E402
from deploykit.train.detection import head_kd  # noqa: E402
from deploykit.train.loop import TASKS, Trainer, TrainConfig  # noqa: E402
from deploykit.zoo import build_model  # noqa: E402

CLASSES = ("red", "green", "blue")


def rectangles(root, n: int, side: int = 64, seed: int = 0):
    """A learnable toy set: colored rectangles (class = color) on gray, in YOLO format."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(2, n // 4))):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            img = np.full((side, side, 3), 114, np.uint8)
            rows = []
            for _ in range(int(rng.integers(1, 3))):
                c = int(rng.integers(3))
                w, h = (int(v) for v in rng.integers(side // 6, side // 2, 2))
                x0, y0 = int(rng.integers(0, side - w)), int(rng.integers(0, side - h))
                img[y0 : y0 + h, x0 : x0 + w] = 0
                img[y0 : y0 + h, x0 : x0 + w, c] = 255
                rows.append(f"{c} {(x0 + w / 2) / side} {(y0 + h / 2) / side} {w / side} {h / side}\n")
            Image.fromarray(img).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("".join(rows))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return rectangles(tmp_path_factory.mktemp("toy"), 16)


def test_fine_tuning_with_the_models_own_loss_decreases_it(toy):
    torch.manual_seed(0)
    built = build_model("ultralytics:yolov8n.yaml,nc=3", input_shape=(1, 3, 64, 64))
    ds = load_dataset(f"yolo:{toy}:train")
    x, y = ds.batch(np.arange(8), built.preprocess)
    trainer = Trainer(built.model, TrainConfig(lr=0.002, optimizer="adamw"), task=TASKS.get("detection"))
    losses = [trainer.step(x, y, 0.002) for _ in range(8)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2]), losses


def test_head_kd_is_zero_for_equal_heads_and_grows_with_their_difference():
    g = torch.Generator().manual_seed(0)
    t = {"boxes": torch.randn(2, 64, 30, generator=g), "scores": torch.randn(2, 3, 30, generator=g)}
    assert float(head_kd(t, t, 2.0)) == pytest.approx(0.0, abs=1e-5)
    near = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in t.items()}
    far = {k: v + 1.0 * torch.randn(v.shape, generator=g) for k, v in t.items()}
    assert 0 < float(head_kd(near, t, 2.0)) < float(head_kd(far, t, 2.0))
    s = {k: v.clone().requires_grad_() for k, v in near.items()}
    head_kd(s, t, 2.0).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in s.values())


def test_distilled_step_runs_and_detector_needs_boxes(toy):
    built = build_model("ultralytics:yolov8n.yaml,nc=3", input_shape=(1, 3, 64, 64))
    teacher = build_model("ultralytics:yolov8n.yaml,nc=3", input_shape=(1, 3, 64, 64)).model.eval()
    ds = load_dataset(f"yolo:{toy}:train")
    x, y = ds.batch(np.arange(4), built.preprocess)
    trainer = Trainer(built.model, TrainConfig(lr=0.002, optimizer="adamw"), teacher, task=TASKS.get("detection"))
    assert np.isfinite(trainer.step(x, y, 0.002))
    with pytest.raises(DeployKitError, match="holds class labels, not boxes"):
        TASKS.get("detection").check_compatible(built, [load_dataset("digits:test")])
    with pytest.raises(DeployKitError, match="has 3 classes but .* detects 80"):
        TASKS.get("detection").check_compatible(build_model("ultralytics:yolov8n.yaml", input_shape=(1, 3, 64, 64)),
                                                [ds])


def test_synthetic_set_pastes_real_photos_with_exact_boxes(tmp_path, data_dir):
    from deploykit.data.synthetic_det import make_synthetic_detection

    cifar_dir = data_dir / "cifar10"

    out = make_synthetic_detection(cifar_dir, tmp_path / "synth", n_train=6, n_test=3, canvas=96, min_side=20,
                                   max_side=40)
    train, test = load_dataset(f"yolo:{out}:train"), load_dataset(f"yolo:{out}:test")
    assert (len(train), len(test), train.images.shape[1:]) == (6, 3, (96, 96, 3))
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    assert (out / "data.yaml").is_file()
    for img, boxes in zip(train.images, train.boxes):
        assert 1 <= len(boxes) <= 3
        for _, cx, cy, w, h in boxes:
            x0, y0 = round((cx - w / 2) * 96), round((cy - h / 2) * 96)
            x1, y1 = round((cx + w / 2) * 96), round((cy + h / 2) * 96)
            assert 20 <= x1 - x0 <= 40 and 20 <= y1 - y0 <= 40
            crop = img[y0:y1, x0:x1].astype(np.int16)
            # The background is 0.4 * photo + 0.6 * 114 (values 68..170); a pasted photo reaches beyond that
            # range somewhere, and its border is where the box says (the row above differs from the first row).
            assert crop.min() < 68 or crop.max() > 170


def test_compress_prunes_fine_tunes_and_exports_a_detector(toy, tmp_path):
    import deploykit
    from deploykit.export.onnx import read_sidecar

    report = deploykit.compress(model="ultralytics:yolov3-tiny.yaml,nc=3", input_shape="1x3x64x64", out=tmp_path / "art",
                                data=f"yolo:{toy}", target_macs=0.5, criterion="l2", finetune_epochs=1, batch_size=8,
                                optimizer="adamw", lr=0.002, kd=True, bn_batches=1)
    assert report["metric"] == "map50" and report["ratios"]["macs"] <= 0.5
    assert 0 <= report["pruned"]["top1"] <= 100 and report["iterations"]["done"] == 2
    built = deploykit.load(tmp_path / "art")
    result = deploykit.export_onnx(built, tmp_path / "det.onnx")
    assert read_sidecar(result["onnx"])["detection"]["head"] == "yolo"
    with deploykit.Engine(tmp_path / "det.onnx", detection=deploykit.DetectSettings(conf=0.0001)) as engine:
        det = engine.predict(np.full((50, 70, 3), 114, np.uint8))
    assert det.boxes.shape[1] == 4 and (det.boxes[:, [0, 2]] <= 70).all() and (det.boxes[:, [1, 3]] <= 50).all()


def test_importing_ultralytics_through_deploykit_leaves_pil_and_torch_alone():
    from PIL import Image

    from deploykit.zoo.yolo import import_ultralytics

    before = (Image.open, torch.save)
    import_ultralytics()
    assert (Image.open, torch.save) == before
