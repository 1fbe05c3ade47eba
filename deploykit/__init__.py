"""deploykit: a deployment-oriented compression toolchain for CNNs.

The public API is small and imports nothing heavy until used::

    import deploykit
    report = deploykit.compress(model="cifar:resnet20", out="out/r20", target_macs=0.5,
                                data="cifar10:../shared/data/cifar10", weights="resnet20.th")
    built = deploykit.load("out/r20")          # BuiltModel: .model, .preprocess, .labels
    deploykit.export_onnx(built, "r20.onnx")
    engine = deploykit.Engine("r20.onnx")      # edge inference: engine.predict(uint8 HWC images)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["compress", "load", "export_onnx", "build_model", "Engine"]


def compress(**kwargs: Any) -> dict[str, Any]:
    """Compress a model and write an artifact; see :class:`deploykit.compression.CompressConfig`."""
    from deploykit.compression import compress as _compress

    return _compress(**kwargs)


def load(path: str, trust_factory: bool = False):
    """Rebuild a pruned artifact (plan.json + model.safetensors) without unpickling.

    ``trust_factory=True`` lets plan.json name a ``module:function`` factory, which imports
    and runs that code; registered families (``cifar:``, ``torchvision:``, ...) need no opt-in.
    """
    from deploykit.prune.artifact import load_artifact

    return load_artifact(path, trust_factory=trust_factory)


def build_model(spec: str, **kwargs: Any):
    """Build a model from a MODEL spec; see :func:`deploykit.zoo.build_model`."""
    from deploykit.zoo import build_model as _build

    return _build(spec, **kwargs)


def export_onnx(built, path: str, opset: int = 17) -> dict[str, Any]:
    """Export a built model to ONNX (with its sidecar); see :func:`deploykit.export.onnx.export_onnx`."""
    from deploykit.export.onnx import export_onnx as _export

    return _export(built, path, opset=opset)


def __getattr__(name: str) -> Any:
    """``deploykit.Engine`` is imported on first use (it pulls in numpy and the runners)."""
    if name == "Engine":
        from deploykit.engine import Engine

        return Engine
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
