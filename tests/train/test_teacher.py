"""--teacher: distil from another model than the unpruned one."""

import json

import numpy as np
import pytest
from torch import nn

from deploykit.cli.main import main
from tests.cli.test_bad_input import run_bad

CALLS: list[int] = []


class _Counting(nn.Module):
    """A 10-class CIFAR-shaped model that records every forward pass."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x):
        CALLS.append(len(x))
        return self.net(x)


def teacher() -> nn.Module:
    return _Counting(10)


def teacher_7_classes() -> nn.Module:
    return _Counting(7)


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    for split, n in (("train", 128), ("test", 32)):
        np.savez(d / f"cifar10_{split}_lossless_000.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n))
    return d


def _args(shards, out, *extra):
    return ["compress", "cifar:resnet20", "--target-macs", "0.8", "--criterion", "l1", "--data", f"cifar10:{shards}",
            "--finetune-epochs", "1", "--batch-size", "32", "--bn-batches", "1", "--out", str(out), *extra]


def test_the_teacher_named_is_the_one_distilled_from(shards, tmp_path):
    CALLS.clear()
    out = tmp_path / "out"
    assert main(_args(shards, out, "--kd", "--teacher", "tests.train.test_teacher:teacher")) == 0
    # One teacher pass per training batch of 32 (128 images, 1 epoch), after one batch-1 probe of its classes.
    assert CALLS == [1] + [32] * 4
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["teacher"] == "tests.train.test_teacher:teacher"


@pytest.mark.parametrize("extra, message", [
    (["--teacher", "tests.train.test_teacher:teacher"], "--teacher distils: pass --kd with it"),
    (["--kd", "--teacher-weights", "w.safetensors"], "--teacher-weights needs --teacher MODEL"),
    (["--kd", "--teacher", "tests.train.test_teacher:teacher_7_classes"], "has 7 outputs, the model 10"),
])
def test_bad_teacher_is_one_line(extra, message, shards, tmp_path, capsys):
    out = tmp_path / "out"
    line = run_bad(_args(shards, out, *extra), capsys)
    assert message in line
    assert not out.exists()
