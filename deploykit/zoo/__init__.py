"""Model specs → models.

Specs: ``torchvision:NAME``, ``cifar:resnet20|32|44|56``, ``digits:demo``, a saved
artifact directory, or ``package.module:factory``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.registry import Registry, unknown_name_message
from deploykit.zoo.base import IMAGENET_MEAN, IMAGENET_STD, BuiltModel, Preprocess
from deploykit.zoo.weights import load_weights

Family = Callable[[str, "tuple[int, ...] | None", bool], BuiltModel]
FAMILIES: Registry[Family] = Registry("model family")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` → ``(1, 3, 224, 224)``."""
    try:
        shape = tuple(int(t) for t in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise DeployKitError(f"input shape {text!r} is not of the form 1x3x224x224") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise DeployKitError(f"input shape {text!r} must be positive integers like 1x3x224x224")
    return shape


@FAMILIES.register("torchvision")
def _torchvision(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        raise DeployKitError(unknown_name_message("torchvision model", name, valid))
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    side = 299 if name == "inception_v3" else 224
    shape = input_shape or (1, 3, side, side)
    pre = Preprocess(size=(shape[-2], shape[-1]), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return BuiltModel(model, f"torchvision:{name}", shape, pre)


@FAMILIES.register("torchvision-detection")
def _torchvision_detection(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    from deploykit.zoo.detection import wrap_detector

    valid = torchvision_detection_models()
    if name not in valid:
        raise DeployKitError(unknown_name_message("torchvision detection model", name, valid))
    import torchvision

    det = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    return wrap_detector(det, f"torchvision-detection:{name}", input_shape or (1, 3, 512, 512))


def torchvision_detection_models() -> list[str]:
    """Detection models torchvision lists (those deploykit can wrap: Faster R-CNN, RetinaNet)."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models.detection)
    return [n for n in names if n.startswith(("fasterrcnn", "retinanet"))]


@FAMILIES.register("cifar")
def _cifar(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    from deploykit.zoo.cifar_resnet import CIFAR10_LABELS, DEPTHS, CifarResNet

    if name not in DEPTHS:
        raise DeployKitError(f"unknown cifar model {name!r}; valid: {', '.join(DEPTHS)}")
    shape = input_shape or (1, 3, 32, 32)
    pre = Preprocess(size=(shape[-2], shape[-1]))
    return BuiltModel(CifarResNet(DEPTHS[name]), f"cifar:{name}", shape, pre, CIFAR10_LABELS)


@FAMILIES.register("digits")
def _digits(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    from deploykit.zoo import digits

    if name != "demo":
        raise DeployKitError(f"unknown digits model {name!r}; valid: demo")
    pre = digits.digits_preprocess()
    model = digits.DigitsResNet()
    built = BuiltModel(model, "digits:demo", input_shape or (1, 1, *pre.size), pre, [str(i) for i in range(10)])
    if pretrained:
        load_weights(model, digits.ensure_pretrained(model))
    return built


def _factory(spec: str, input_shape: tuple[int, ...] | None) -> BuiltModel:
    mod_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise DeployKitError(
            f"unknown model spec {spec!r}: no model family {mod_name!r} ({', '.join(FAMILIES.names())}) "
            f"and no importable module ({e})"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise DeployKitError(f"module {mod_name!r} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise DeployKitError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    shape = input_shape or tuple(getattr(fn, "input_shape", getattr(model, "input_shape", (1, 3, 224, 224))))
    pre = Preprocess(size=(shape[-2], shape[-1]), channels=shape[1])
    return BuiltModel(model, spec, shape, pre)


def build_model(
    spec: str, weights: str | None = None, input_shape: tuple[int, ...] | None = None, pretrained: bool = True
) -> BuiltModel:
    """Build the model a MODEL spec names.

    Args:
        spec: ``family:name``, an artifact directory, or ``package.module:factory``.
        weights: optional weights file (safetensors or torch checkpoint) loaded strictly.
        input_shape: override the family's default example input shape.
        pretrained: load a family's built-in weights (the digits demo's cached training);
            False when the weights come from elsewhere anyway.

    Raises:
        DeployKitError: unknown spec, unreadable or mismatched weights.
    """
    path = Path(spec)
    if path.is_dir():
        from deploykit.prune.artifact import load_artifact

        built = load_artifact(path)
    else:
        built = _from_spec(spec, input_shape, pretrained)
    if weights:
        load_weights(built.model, weights)
    built.model.eval()
    return built


def _from_spec(spec: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    family, sep, name = spec.partition(":")
    if not sep or not name:
        raise DeployKitError(
            f"unknown model spec {spec!r}; valid: {', '.join(f + ':NAME' for f in FAMILIES.names())}, "
            "an artifact directory, or package.module:factory"
        )
    if family in FAMILIES:
        return FAMILIES.get(family)(name, input_shape, pretrained)
    return _factory(spec, input_shape)


def check_input(built: BuiltModel) -> None:
    """Run the example input once; an input the model rejects is a user error."""
    try:
        with torch.no_grad():
            built.traced(built.example_input())
    except Exception as e:  # noqa: BLE001 - any failure here is a shape the model cannot take
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        shape = "x".join(map(str, built.input_shape))
        raise DeployKitError(f"model {built.spec} rejects input shape {shape}: {msg}") from None
