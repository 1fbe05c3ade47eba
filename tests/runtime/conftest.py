"""Shared fixtures for the runner tests: a small CNN exported once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """``(BuiltModel, onnx path)``: CIFAR ResNet-20 with its random init, exported to ONNX."""
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    built = build_model("cifar:resnet20")
    path = tmp_path_factory.mktemp("runners") / "r20.onnx"
    export_onnx(built, path)
    return built, path
