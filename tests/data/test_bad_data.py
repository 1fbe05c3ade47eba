"""Bad data through the real CLI: exit 2, one line naming the file and what is wrong, nothing written.

Every case builds its own tiny input under ``tmp_path`` and runs ``deploykit eval``
(most cases) or ``deploykit compress`` (the checks that guard fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from tests.cli.test_bad_input import run_bad

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
Y = np.arange(8) % 10
SHARD = "cifar10_{split}_lossless_{i:03d}.npz"
# A 1-channel model that needs no training: a command-line factory spec runs without --trust-factory.
GRAY = "tests.data.test_bad_data:gray_model"


def gray_model() -> nn.Module:
    """A tiny 1-channel 16×16 classifier with 10 outputs."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


gray_model.input_shape = (1, 1, 16, 16)  # type: ignore[attr-defined]


def shards(tmp: Path, *arrays: dict[str, np.ndarray], split: str = "test") -> str:
    """Write one shard per dict under ``tmp/c``; the spec that reads them."""
    d = tmp / "c"
    d.mkdir(exist_ok=True)
    for i, a in enumerate(arrays):
        np.savez(d / SHARD.format(split=split, i=i), **a)
    return f"cifar10:{d}:{split}"


def corrupt(tmp: Path) -> str:
    spec = shards(tmp, {"x": X, "y": Y})
    f = tmp / "c" / SHARD.format(split="test", i=0)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return spec


def text_npz(tmp: Path) -> str:
    (tmp / "c").mkdir()
    (tmp / "c" / SHARD.format(split="test", i=0)).write_text("these are not arrays\n")
    return f"cifar10:{tmp / 'c'}:test"


def broken_image_folder(tmp: Path) -> str:
    for cls in ("cat", "dog"):
        (tmp / "f" / cls).mkdir(parents=True)
        Image.fromarray(X[0]).save(tmp / "f" / cls / "good.png")
    (tmp / "f" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return f"imagefolder:{tmp / 'f'}"


def many_class_folder(tmp: Path) -> str:
    for k in range(11):  # 11 classes for a 10-output model: label 10 has no output
        (tmp / "f" / f"c{k:02d}").mkdir(parents=True)
        Image.fromarray(X[k % len(X)]).save(tmp / "f" / f"c{k:02d}" / "a.png")
    return f"imagefolder:{tmp / 'f'}"


def train_and_test(tmp: Path, train: dict[str, np.ndarray]) -> str:
    shards(tmp, {"x": X, "y": Y})
    return shards(tmp, train, split="train").rsplit(":", 1)[0]


Case = tuple[str, Callable[[Path], str], list[str]]
SHARD0 = SHARD.format(split="test", i=0)

# (model, data spec builder, words the one line must hold)
EVAL_CASES: dict[str, Case] = {
    "corrupt npz": ("cifar:resnet20", corrupt, [SHARD0, "not a readable .npz"]),
    "text named npz": ("cifar:resnet20", text_npz, [SHARD0, "is not a zip archive", "valid: an .npz"]),
    "keys not x/y": ("cifar:resnet20", lambda t: shards(t, {"images": X, "labels": Y}),
                     [SHARD0, "has no array 'x'", "images, labels"]),
    "NCHW images": ("cifar:resnet20", lambda t: shards(t, {"x": X.transpose(0, 3, 1, 2), "y": Y}),
                    [SHARD0, "8×3×32×32", "N×C×H×W", "transpose(0, 2, 3, 1)"]),
    "flattened images": ("cifar:resnet20", lambda t: shards(t, {"x": X.reshape(8, -1), "y": Y}),
                         [SHARD0, "8×3072, not N×H×W×C"]),
    "string labels": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": Y.astype(str)}),
                      [SHARD0, "labels y are strings, not integers"]),
    "object labels": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": np.array(list(Y), dtype=object)}),
                      [SHARD0, "labels y are objects, not integers"]),
    "shards of two sizes": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": Y}, {"x": X[:, :28, :28], "y": Y}),
                            [SHARD.format(split="test", i=1), "28×28×3", "32×32×3", "one size"]),
    "broken image": ("cifar:resnet20", broken_image_folder, ["bad.png", "cannot read this image"]),
    "3-channel data, 1-channel model": (GRAY, lambda t: shards(t, {"x": X, "y": Y}),
                                        ["cifar10:", "cannot feed 3-channel images to a 1-channel model"]),
    "labels past the classes": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": np.full(8, 10)}),
                                [SHARD0, "label 10 is out of range; valid: labels 0..9"]),
    "negative labels": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": np.where(Y == 2, -1, Y)}),
                        [SHARD0, "label -1 is out of range"]),
    "y shorter than x": ("cifar:resnet20", lambda t: shards(t, {"x": X, "y": Y[:4]}),
                         [SHARD0, "4 labels y for 8 images x"]),
    "empty shard": ("cifar:resnet20", lambda t: shards(t, {"x": X[:0], "y": Y[:0]}), [SHARD0, "holds no images"]),
    "float images in [0, 1]": ("cifar:resnet20", lambda t: shards(t, {"x": X.astype(np.float32) / 255, "y": Y}),
                               [SHARD0, "images x are float32, not uint8", "astype(np.uint8)"]),
    "too many spec fields": ("cifar:resnet20", lambda t: "digits:test:extra:stuff",
                             ["'digits:test:extra:stuff' has too many", "valid: digits[:train|test]"]),
    "more classes than outputs": ("cifar:resnet20", many_class_folder,
                                  ["imagefolder:", "label 10 is out of range for a model with 10 outputs"]),
}

# Checks that guard fine-tuning: each would have crashed (or silently misread) mid-compress.
COMPRESS_CASES: dict[str, Case] = {
    "training labels past the classes": (
        "cifar:resnet20", lambda t: train_and_test(t, {"x": X, "y": np.where(Y == 3, 19, Y)}),
        [SHARD.format(split="train", i=0), "label 19 is out of range; valid: labels 0..9"]),
    "training folders past the outputs": ("cifar:resnet20", many_class_folder,
                                          ["label 10 is out of range for a model with 10 outputs"]),
    "3-channel data, 1-channel model": (GRAY, lambda t: train_and_test(t, {"x": X, "y": Y}),
                                        ["cannot feed 3-channel images to a 1-channel model"]),
    "too many spec fields": ("cifar:resnet20", lambda t: "digits:test:extra:stuff",
                             ["'digits:test:extra:stuff' has too many", "valid: digits[:train|test]"]),
}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("model, build, words", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_eval_bad_data(model, build, words, tmp_path, capsys):
    spec = build(tmp_path)
    before = _files(tmp_path)
    line = run_bad(["eval", model, "--data", spec, "--json", tmp_path / "r.json"], capsys)
    for w in words:
        assert w in line
    assert _files(tmp_path) == before


@pytest.mark.parametrize("model, build, words", COMPRESS_CASES.values(), ids=COMPRESS_CASES.keys())
def test_compress_bad_data(model, build, words, tmp_path, capsys):
    spec = build(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "out"
    line = run_bad(["compress", model, "--target-macs", "0.5", "--criterion", "l1", "--finetune-epochs", "0.01",
                    "--data", spec, "--out", out], capsys)
    for w in words:
        assert w in line
    assert not out.exists()
    assert _files(tmp_path) == before


def test_good_shards_load(tmp_path):
    """The checks pass what they should: extra members, gray images, Fortran order, big-endian labels."""
    from deploykit.data import load_dataset

    gray = np.asfortranarray(X[..., :1])
    spec = shards(tmp_path, {"x": gray, "y": Y.astype(">i2"), "test_index": np.arange(8)}, {"x": gray, "y": Y})
    ds = load_dataset(spec)
    assert ds.images.shape == (16, 32, 32, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and list(ds.labels) == list(Y) * 2
    np.testing.assert_array_equal(ds.images[:8], gray)


@pytest.fixture(scope="module")
def gray_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1-channel model exported to ONNX (with its sidecar)."""
    from deploykit.cli.main import main

    path = tmp_path_factory.mktemp("onnx") / "gray.onnx"
    assert main(["export", GRAY, "--onnx", str(path)]) == 0
    return path


@pytest.mark.parametrize("backend", [None, "ort"])
def test_eval_onnx_checks_channels(backend, gray_onnx, tmp_path, capsys):
    """The ONNX paths check data against the sidecar's preprocessing too."""
    spec = shards(tmp_path, {"x": X, "y": Y})
    before = _files(tmp_path)
    line = run_bad(["eval", gray_onnx, "--data", spec, *(["--backend", backend] if backend else [])], capsys)
    assert "cannot feed 3-channel images to a 1-channel model" in line
    assert _files(tmp_path) == before


def test_model_classes(gray_onnx):
    """The output width comes from a module's output or an ONNX session's declared shape."""
    import torch

    from deploykit.data import model_classes
    from deploykit.export.onnx import ort_session

    model = gray_model().train()
    assert model_classes(model, torch.zeros(1, 1, 16, 16)) == 10
    assert model.training  # the probe leaves the mode as it found it
    assert model_classes(model, torch.zeros(1, 3, 16, 16)) is None  # an input it rejects: unknown, not a crash
    assert model_classes(ort_session(str(gray_onnx))) == 10
