"""Fixtures for the deploy tests: real CIFAR-10 data and ResNet-20 weights from
``$DEPLOYKIT_DATA`` or ../shared/data when present (skipped with a reason otherwise),
and exported models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("DEPLOYKIT_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
CIFAR = SHARED / "cifar10"
R20_WEIGHTS = SHARED / "weights" / "resnet20-12fca82f.th"


@pytest.fixture(scope="session")
def cifar_spec() -> str:
    """DATA spec of the real CIFAR-10 shards."""
    if not (CIFAR / "cifar10_test_lossless_000.npz").is_file():
        pytest.skip(f"real CIFAR-10 not found under {CIFAR} (see shared/data/README.md)")
    return f"cifar10:{CIFAR}"


@pytest.fixture(scope="session")
def r20_fp32(tmp_path_factory, cifar_spec):
    """Pretrained CIFAR ResNet-20 exported to FP32 ONNX (with sidecar)."""
    if not R20_WEIGHTS.is_file():
        pytest.skip(f"pretrained ResNet-20 weights not found at {R20_WEIGHTS}")
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    built = build_model("cifar:resnet20", weights=str(R20_WEIGHTS))
    path = tmp_path_factory.mktemp("r20") / "r20.onnx"
    export_onnx(built, path)
    return path


@pytest.fixture(scope="session")
def random_onnx(tmp_path_factory):
    """CIFAR ResNet-20 with its random init, exported (no data needed)."""
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    import torch

    torch.manual_seed(0)  # the same weights whatever ran before
    path = tmp_path_factory.mktemp("rand") / "rand.onnx"
    export_onnx(build_model("cifar:resnet20"), path)
    return path
