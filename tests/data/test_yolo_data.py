"""The ``yolo:DIR`` data spec: folders in YOLO format, boxes through the letterbox, and every
bad input as one line (exit 2 on the command line)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploykit.data import load_dataset
from deploykit.data.splits import with_split
from deploykit.errors import DeployKitError
from deploykit.zoo.base import Preprocess


def write_folder(root, images: dict[str, tuple[tuple[int, int], str | None]], split: str | None = "train",
                 names: list[str] | None = ("a", "b", "c")):
    """``images``: stem → ((h, w), label text or None for no label file)."""
    img_dir = root / "images" / split if split else root / "images"
    lab_dir = root / "labels" / split if split else root / "labels"
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for i, (stem, ((h, w), text)) in enumerate(images.items()):
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(img_dir / f"{stem}.png")
        if text is not None:
            (lab_dir / f"{stem}.txt").write_text(text)
    if names is not None:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def test_reads_splits_classes_and_boxes(tmp_path):
    write_folder(tmp_path, {"x": ((40, 40), "1 0.5 0.5 0.5 0.25\n0 0.25 0.25 0.1 0.1\n"), "y": ((40, 40), None)})
    write_folder(tmp_path, {"z": ((40, 40), "2 0.5 0.5 1 1\n")}, split="val")
    train = load_dataset(with_split("yolo:" + str(tmp_path), "train"))
    test = load_dataset(with_split("yolo:" + str(tmp_path), "test"))
    assert (len(train), len(test), train.classes, train.task) == (2, 1, ["a", "b", "c"], "detection")
    assert train.labels.tolist() == [1, 0] and len(train.boxes[1]) == 0  # no label file: background
    x, y = train.batch(np.arange(2), Preprocess(size=(40, 40)))
    assert x.shape == (2, 3, 40, 40)
    np.testing.assert_allclose(y.numpy(), [[0, 1, 0.5, 0.5, 0.5, 0.25], [0, 0, 0.25, 0.25, 0.1, 0.1]])


def test_boxes_follow_the_letterbox_of_the_model_input(tmp_path):
    write_folder(tmp_path, {"x": ((40, 80), "0 0.25 0.5 0.5 1\n")})  # the left half of a 2:1 image
    ds = load_dataset(f"yolo:{tmp_path}:train")
    pre = Preprocess(size=(80, 80), mean=(0.0,) * 3, std=(1.0,) * 3, resize="letterbox")
    x, y = ds.batch(np.arange(1), pre)
    # 80x40 content centred in 80x80: 20 rows of padding above; the box spans rows 20..60, columns 0..40.
    np.testing.assert_allclose(y.numpy(), [[0, 0, 0.25, 0.5, 0.5, 0.5]], atol=1e-6)
    assert float(x[0, 0, 5, 5]) == pytest.approx(114 / 255)  # padding


def test_images_of_different_sizes_are_letterboxed_to_one_square(tmp_path):
    write_folder(tmp_path, {"wide": ((20, 40), "0 0.5 0.5 1 1\n"), "square": ((30, 30), "1 0.5 0.5 0.2 0.2\n")})
    ds = load_dataset(f"yolo:{tmp_path}:train")
    assert ds.images.shape == (2, 40, 40, 3)
    # Files in name order: square, wide. The 40x20 image sits centred: its box is half the canvas' height.
    np.testing.assert_allclose(ds.boxes[0], [[1, 0.5, 0.5, 0.2, 0.2]], atol=1e-6)
    np.testing.assert_allclose(ds.boxes[1], [[0, 0.5, 0.5, 1, 0.5]], atol=1e-6)


def test_a_single_folder_serves_both_splits_and_data_yaml_names(tmp_path):
    write_folder(tmp_path, {"x": ((16, 16), "1 0.5 0.5 0.5 0.5\n")}, split=None, names=None)
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    for split in ("train", "test"):
        ds = load_dataset(f"yolo:{tmp_path}:{split}")
        assert len(ds) == 1 and ds.classes == ["cat", "dog"]


@pytest.mark.parametrize(("text", "match"), [
    ("0 0.5 0.5 0.5\n", "4 fields"),
    ("0 0.5 0.5 0.5 0.5 0.1 0.2\n", "7 fields"),
    ("0 0.5 x 0.5 0.5\n", "is not numbers"),
    ("3 0.5 0.5 0.5 0.5\n", "class 3 is not one of 0..2"),
    ("1.5 0.5 0.5 0.5 0.5\n", "class 1.5"),
    ("-1 0.5 0.5 0.5 0.5\n", "class -1"),
    ("0 0.5 0.5 0 0.5\n", "not positive"),
    ("0 0.9 0.5 0.5 0.5\n", "outside the image"),
    ("0 nan 0.5 0.5 0.5\n", "not finite"),
])
def test_bad_label_lines_name_the_file_and_line(tmp_path, text, match):
    write_folder(tmp_path, {"x": ((16, 16), "0 0.5 0.5 0.2 0.2\n" + text)})
    with pytest.raises(DeployKitError, match=match) as e:
        load_dataset(f"yolo:{tmp_path}:train")
    assert "x.txt:2" in str(e.value) and "\n" not in str(e.value)


def test_bad_folders_and_specs(tmp_path):
    with pytest.raises(DeployKitError, match="not a directory"):
        load_dataset(f"yolo:{tmp_path / 'nope'}")
    with pytest.raises(DeployKitError, match="needs a directory"):
        load_dataset("yolo:")
    write_folder(tmp_path, {"x": ((16, 16), "0 0.5 0.5 0.2 0.2\n")}, names=None)
    with pytest.raises(DeployKitError, match="no class names"):
        load_dataset(f"yolo:{tmp_path}:train")
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(DeployKitError, match="split 'val' is not one of train, test"):
        load_dataset(f"yolo:{tmp_path}:val")
    with pytest.raises(DeployKitError, match="images/val or .*images/test"):
        load_dataset(f"yolo:{tmp_path}:test")
    with pytest.raises(DeployKitError, match="too many"):
        load_dataset(f"yolo:{tmp_path}:train:extra")
    (tmp_path / "images" / "train" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DeployKitError, match="cannot read this image"):
        load_dataset(f"yolo:{tmp_path}:train")


def test_with_split_sets_the_yolo_split():
    assert with_split("yolo:/d", "train") == "yolo:/d:train"
    assert with_split("yolo:/d:test", "train") == "yolo:/d:train"
    assert with_split("yolo:/d:bogus", "train") == "yolo:/d:bogus"  # left for the loader to refuse


def test_cli_bad_detection_data_is_one_line_exit_2(tmp_path, capsys):
    from deploykit.cli.main import main

    write_folder(tmp_path, {"x": ((16, 16), "7 0.5 0.5 0.2 0.2\n")})
    rc = main(["compress", "cifar:resnet20", "--data", f"yolo:{tmp_path}", "--target-macs", "0.5",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "class 7 is not one of 0..2" in err
    assert not (tmp_path / "out").exists()
