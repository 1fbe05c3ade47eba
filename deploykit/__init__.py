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

import os
from typing import Any

from deploykit.specs import SPEC_RESOLVERS, SpecResolver

__version__ = "0.1.0"
__all__ = ["compress", "load", "export_onnx", "build_model", "Engine", "DetectSettings"]

# An artifact directory is a MODEL spec. Loading one takes the prune layer, which the zoo sits
# below and must not import; registered here, where the package is first imported, the zoo
# finds it whoever calls.
SPEC_RESOLVERS.register("artifact directory", SpecResolver(os.path.isdir, "deploykit.prune.artifact:load_artifact"))


def _fspath(value: Any) -> Any:
    """``value`` with paths (``pathlib.Path`` and other ``os.PathLike``) as strings, also inside lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_fspath(v) for v in value)
    return value


def compress(**kwargs: Any) -> dict[str, Any]:
    """Compress a model and write an artifact; see :class:`deploykit.compression.CompressConfig`.

    Paths may be given as ``str`` or ``pathlib.Path``; every option is validated before any work
    (a :class:`~deploykit.errors.DeployKitError` names the option and what is valid).
    """
    from deploykit.compression import compress as _compress

    # The options mirror the CLI's strings; a Path is the same path.
    return _compress(**{k: _fspath(v) for k, v in kwargs.items()})


def load(path: str | os.PathLike, trust_factory: bool = False):
    """Rebuild a pruned artifact (plan.json + model.safetensors) without unpickling.

    ``trust_factory=True`` lets plan.json name a ``module:function`` factory, which imports
    and runs that code; registered families (``cifar:``, ``torchvision:``, ...) need no opt-in.

    Raises:
        DeployKitError: ``path`` is not an artifact directory, or ``trust_factory`` is not a bool.
    """
    from deploykit.errors import DeployKitError
    from deploykit.prune.artifact import load_artifact

    if not isinstance(trust_factory, bool):  # a truthy string must not opt in to running code
        raise DeployKitError(f"load: trust_factory={trust_factory!r}; valid: True or False")
    return load_artifact(path, trust_factory=trust_factory)


def build_model(spec: str, **kwargs: Any):
    """Build a model from a MODEL spec; see :func:`deploykit.zoo.build_model`."""
    from deploykit.zoo import build_model as _build

    return _build(spec, **kwargs)


def export_onnx(built, path: str | os.PathLike, opset: int = 17) -> dict[str, Any]:
    """Export a built model to ONNX (with its sidecar); see :func:`deploykit.export.onnx.export_onnx`.

    Raises:
        DeployKitError: ``built`` is not a model from :func:`load` / :func:`build_model`, ``path``
            is not a file path, or ``opset`` is not a supported integer.
    """
    from deploykit.errors import DeployKitError
    from deploykit.export.onnx import export_onnx as _export
    from deploykit.zoo.base import BuiltModel

    if not isinstance(built, BuiltModel):
        hint = "; build it first with deploykit.build_model(spec)" if isinstance(built, str) else ""
        raise DeployKitError(f"export_onnx: built is a {type(built).__name__}; give the BuiltModel that "
                             f"deploykit.load() or deploykit.build_model() returns{hint}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise DeployKitError(f"export_onnx: path {path!r} is not a file path; "
                             "give one as a str or Path, e.g. 'model.onnx'")
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise DeployKitError(f"export_onnx: opset {opset!r} is not an integer; valid: 7..22 (default 17)")
    return _export(built, path, opset=opset)


def __getattr__(name: str) -> Any:
    """``deploykit.Engine`` is imported on first use (it pulls in numpy and the runners)."""
    if name == "Engine":
        from deploykit.engine import Engine

        return Engine
    if name == "DetectSettings":  # a detector's thresholds for Engine(detection=...)
        from deploykit.kernels.detection import DetectSettings

        return DetectSettings
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
