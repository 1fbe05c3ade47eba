"""What the zoo hands back: a model with the facts needed to feed and rebuild it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 HWC images become the model's input tensor.

    ``x = (resize(img, size) / scale - mean) / std`` in NCHW float32. ``scale=1``
    with ``mean=0, std=1`` feeds raw pixel values (0..255).
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float = 255.0
    channels: int = 3
    layout: str = "NCHW"
    color: str = "RGB"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the artifact and ONNX sidecar carry it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["size"] = tuple(d["size"])
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float) NHWC images → normalized float32 NCHW of ``size``."""
        x = images.permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = x / self.scale
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class BuiltModel:
    """A model from the zoo.

    Attributes:
        model: the module, in eval mode.
        spec: the MODEL spec that rebuilds it (``cifar:resnet20``, an artifact dir, ...).
        input_shape: example input shape, batch 1 (``(1, 3, 32, 32)``).
        preprocess: how to turn uint8 images into its input.
        labels: class names when known.
        base_spec: for a pruned artifact, the spec of the unpruned model.
        plan: for a pruned artifact, its plan (a dict as in plan.json).
        task: ``classification`` or ``detection``.
        graph_module: what the channel graph traces and costs count (default: ``model``);
            a detector's traceable core, sharing the detector's modules.
        export_module: what ONNX export writes (default: ``model``).
    """

    model: nn.Module
    spec: str
    input_shape: tuple[int, ...]
    preprocess: Preprocess
    labels: list[str] | None = None
    base_spec: str | None = None
    plan: dict[str, Any] | None = field(default=None, repr=False)
    task: str = "classification"
    graph_module: nn.Module | None = field(default=None, repr=False)
    export_module: nn.Module | None = field(default=None, repr=False)

    @property
    def traced(self) -> nn.Module:
        """The module the channel graph traces (a detector's core, else the model)."""
        return self.graph_module if self.graph_module is not None else self.model

    @property
    def exported(self) -> nn.Module:
        """The module ONNX export writes."""
        return self.export_module if self.export_module is not None else self.model

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """A deterministic random input of the model's shape."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn((batch, *self.input_shape[1:]), generator=g)
