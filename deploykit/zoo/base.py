"""What the zoo hands back: a model with the facts needed to feed and rebuild it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from deploykit.config import StrictDocument, validate_document

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The largest image side a preprocessing may resize to (a 100000² size would allocate tens of GB).
MAX_SIDE = 16384
# Image channels a preprocessing may describe. The CUDA/host kernels feed 1 or 3 (they say so
# in one line at predict time); PyTorch's path feeds any count whose mean/std match.
MAX_CHANNELS = 16
COLORS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW",)
# How an image reaches ``size``: stretched, or scaled to fit with its aspect ratio kept and padded
# (YOLO's letterbox: centred, the extra pixel at the bottom/right, padded with ``pad_value``).
RESIZES = ("stretch", "letterbox")
TASKS = ("classification", "detection")

# A hand-edited input shape must not allocate without limit: the example input a model is traced
# with stays under 512 MiB of float32 (a 1x3x8192x8192 image is 201M elements).
MAX_INPUT_ELEMENTS = 1 << 27
MAX_DIM = 1 << 20

Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]
Finite = Annotated[float, Field(ge=-1e6, le=1e6)]
Positive = Annotated[float, Field(gt=0, le=1e6)]


def check_input_shape(shape: list[int]) -> list[int]:
    """A model input shape's size bound (each dimension's is in :data:`Dim`).

    Raises:
        ValueError: the shape holds more than :data:`MAX_INPUT_ELEMENTS` elements.
    """
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ValueError(f"{'x'.join(map(str, shape))} has more than {MAX_INPUT_ELEMENTS:,} elements")
    return shape


class PreprocessDoc(StrictDocument):
    """The schema of a preprocessing as files carry it (plan.json, sidecars): see :class:`Preprocess`."""

    size: list[Side] = Field(min_length=2, max_length=2)
    mean: list[Finite] = Field(min_length=1, max_length=MAX_CHANNELS)
    # A zero std would normalize every pixel to inf; a negative one flips the image.
    std: list[Positive] = Field(min_length=1, max_length=MAX_CHANNELS)
    scale: Positive = 255.0
    channels: int = Field(3, ge=1, le=MAX_CHANNELS)
    layout: Literal[LAYOUTS] = "NCHW"  # type: ignore[valid-type]
    color: Literal[COLORS] = "RGB"  # type: ignore[valid-type]
    resize: Literal[RESIZES] = "stretch"  # type: ignore[valid-type]
    pad_value: float = Field(114.0, ge=0, le=255)

    @model_validator(mode="after")
    def _per_channel(self) -> PreprocessDoc:
        for name in ("mean", "std"):
            n = len(getattr(self, name))
            if n != self.channels:
                raise ValueError(f"{name} has {n} values for {self.channels} channels; give one per channel")
        return self


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 HWC images become the model's input tensor.

    ``x = (resize(img, size) / scale - mean) / std`` in NCHW float32. ``scale=1``
    with ``mean=0, std=1`` feeds raw pixel values (0..255). ``resize="letterbox"`` keeps the
    aspect ratio and pads with ``pad_value`` (a pixel value, before scaling), centred.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float = 255.0
    channels: int = 3
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "stretch"
    pad_value: float = 114.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the artifact and ONNX sidecar carry it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "preprocess") -> Preprocess:
        """Inverse of :meth:`to_dict`, validated: ``d`` comes from a file.

        Args:
            d: the dict as :meth:`to_dict` writes it (sizes and vectors as lists or tuples).
            source: where it came from, for messages ("r20.onnx.json").

        Raises:
            DeployKitError: one line naming the field and what is valid (e.g. a std of 0).
        """
        if isinstance(d, dict):  # to_dict's tuples, as a JSON round trip would give them
            d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        doc = validate_document(d, PreprocessDoc, source, "a preprocessing (size, mean, std, scale, channels, color)")
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: PreprocessDoc) -> Preprocess:
        """The preprocessing a validated document describes."""
        return cls(size=(doc.size[0], doc.size[1]), mean=tuple(doc.mean), std=tuple(doc.std), scale=doc.scale,
                   channels=doc.channels, layout=doc.layout, color=doc.color, resize=doc.resize,
                   pad_value=doc.pad_value)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float) NHWC images → normalized float32 NCHW of ``size``."""
        x = images.permute(0, 3, 1, 2).float()
        if self.resize == "letterbox":
            x = letterbox(x, self.size, self.pad_value)
        elif tuple(x.shape[-2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = x / self.scale
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def letterbox(x: torch.Tensor, size: tuple[int, int], pad_value: float) -> torch.Tensor:
    """Fit NCHW ``x`` inside ``size`` keeping its aspect ratio, centred, padded with ``pad_value``.

    The scaled size rounds to the nearest pixel and the extra padding pixel goes to the
    bottom/right: the geometry of the preprocessing kernels (``letterbox_geometry``).
    """
    src_h, src_w = x.shape[-2:]
    out_h, out_w = size
    r = min(out_h / src_h, out_w / src_w)
    h, w = max(1, min(out_h, round(src_h * r))), max(1, min(out_w, round(src_w * r)))
    if (h, w) != (src_h, src_w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    top, left = (out_h - h) // 2, (out_w - w) // 2
    out = x.new_full((*x.shape[:2], out_h, out_w), float(pad_value))
    out[..., top:top + h, left:left + w] = x
    return out


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


def check_labels(labels: list[str] | None, width: int | None, source: str) -> None:
    """Refuse class names that do not match the model's output width (a short list fails at predict).

    Args:
        labels: the class names a file gives (None: the model's indices are its labels).
        width: the classifier's output width, where known (None: nothing to check).
        source: the file they came from, for the message.

    Raises:
        DeployKitError: one line giving both counts.
    """
    if labels is not None and width is not None and len(labels) != width:
        from deploykit.errors import DeployKitError

        raise DeployKitError(f"{source} gives {len(labels)} labels but the model has {width} outputs; "
                             "give one label per output (or none)")


def family_options(name: str, family: str, valid: dict[str, type]) -> tuple[str, dict[str, Any]]:
    """Split ``yolov8n.yaml,nc=10`` into the name and its options, typed by ``valid``.

    Raises:
        DeployKitError: an unknown option or a value of the wrong type, naming the valid ones.
    """
    from deploykit.errors import DeployKitError

    base, *parts = name.split(",")
    opts: dict[str, Any] = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key not in valid:
            raise DeployKitError(f"{family}:{name}: unknown option {key!r}; valid: {', '.join(sorted(valid)) or 'none'}")
        try:
            opts[key] = valid[key](value)
        except ValueError:
            raise DeployKitError(f"{family}:{name}: option {key}={value!r} is not a {valid[key].__name__}") from None
        if isinstance(opts[key], int) and opts[key] < 1:
            raise DeployKitError(f"{family}:{name}: option {key}={value!r} must be a positive integer")
    return base, opts
