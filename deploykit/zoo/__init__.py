"""Model specs → models.

Specs: ``torchvision:NAME``, ``cifar:resnet20|32|44|56``, ``digits:demo``, ``timm:NAME``
(the ``timm`` extra), ``ultralytics:CFG`` (the ``yolo`` extra), a saved artifact directory,
or ``package.module:factory``. A family name may carry options after commas
(``ultralytics:yolov8n.yaml,nc=10``, ``timm:resnet18,num_classes=10``).

A factory spec runs code (it imports the module and calls the function), so it runs only
when the user names it (on the command line, or as the spec given to :func:`build_model`),
or when the user opts in (``--trust-factory``, ``trust_factory=True``): a spec read from a
file (plan.json) is data, and a registered family is the only kind it may name freely.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch import nn

from deploykit.config import one_line
from deploykit.errors import DeployKitError
from deploykit.registry import Registry, unknown_name_message
from deploykit.specs import resolver_for
from deploykit.zoo.base import IMAGENET_MEAN, IMAGENET_STD, TASKS, BuiltModel, Preprocess
from deploykit.zoo.weights import load_weights

Family = Callable[[str, "tuple[int, ...] | None", bool], BuiltModel]
FAMILIES: Registry[Family] = Registry("model family")

# ``package.module:function``: dotted identifiers, a colon, an identifier (never a path).
_FACTORY_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
# ``family:name``: the names families take (``resnet20``, ``fasterrcnn_resnet50_fpn``, ``demo``),
# with options after commas (``yolov8n.yaml,nc=10``); never a path.
_FAMILY_NAME = re.compile(r"[\w.\-]+(,[A-Za-z_]\w*=[\w.\-]+)*")
# What a factory (or importing its module) may raise that must not end the process or
# pass for success: ``sys:exit`` raises SystemExit, and a factory may raise anything.
_FACTORY_FAILURES = (Exception, SystemExit, KeyboardInterrupt)
# Whether factory specs read from files may run, where no ``trust_factory`` argument says.
_TRUST_FACTORIES: ContextVar[bool] = ContextVar("deploykit_trust_factories", default=False)


@contextlib.contextmanager
def trusting_factories(trust: bool = True) -> Iterator[None]:
    """Within the block, files may name ``module:function`` factories (``--trust-factory``).

    For code that loads models through layers which take no ``trust_factory`` argument
    (a compress run, an Engine's runner). Context-local: other threads are unaffected.
    """
    token = _TRUST_FACTORIES.set(_flag(trust))
    try:
        yield
    finally:
        _TRUST_FACTORIES.reset(token)


def trusted(trust_factory: bool | None) -> bool:
    """``trust_factory`` when given, else whether the caller is inside :func:`trusting_factories`."""
    return _TRUST_FACTORIES.get() if trust_factory is None else _flag(trust_factory)


def _flag(trust: object) -> bool:
    """An opt-in must be a real bool: a truthy ``"no"`` must not run code."""
    if not isinstance(trust, bool):
        raise DeployKitError(f"trust_factory={one_line(repr(trust), 60)}; valid: True or False")
    return trust


def check_spec(spec: str) -> str:
    """``spec`` when it is a ``family:name`` or ``package.module:function`` spec (never a path).

    Raises:
        ValueError: what a spec looks like (schemas turn it into their one-line message).
    """
    family, _, name = spec.partition(":")
    if family in FAMILIES and _FAMILY_NAME.fullmatch(name):
        return spec
    if family not in FAMILIES and _FACTORY_SPEC.fullmatch(spec):
        return spec
    raise ValueError(f"must be a model family spec ({family_hint()}) or a package.module:function factory, "
                     "never a path or anything else")


def family_hint() -> str:
    """``cifar:, digits:, torchvision:, ...``: what runs without ``--trust-factory``."""
    return ", ".join(f"{f}:" for f in FAMILIES.names())


def is_factory(spec: str) -> bool:
    """Whether ``spec`` names code to import (a ``module:function``) rather than a registered family."""
    return spec.partition(":")[0] not in FAMILIES


def require_trust(spec: str, source: str, trust_factory: bool | None = None) -> None:
    """Refuse a factory spec read from ``source`` (a file) unless the user opted in.

    Raises:
        DeployKitError: one line naming the file, the factory and the opt-in.
    """
    if is_factory(spec) and not trusted(trust_factory):
        raise DeployKitError(
            f"{source} names the factory {one_line(repr(spec), 120)}, which would run code; pass --trust-factory "
            f"(Python: trust_factory=True) if you trust it (registered families run without it: {family_hint()})"
        )


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


def _failure(e: BaseException) -> str:
    """``SystemExit: 3``: an exception as a short phrase for a one-line message."""
    text = one_line(str(e), 160)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _factory(spec: str, input_shape: tuple[int, ...] | None) -> BuiltModel:
    mod_name, _, fn_name = spec.partition(":")
    if not _FACTORY_SPEC.fullmatch(spec):
        raise DeployKitError(f"unknown model spec {one_line(repr(spec), 120)}: no model family "
                             f"{one_line(repr(mod_name), 60)} ({', '.join(FAMILIES.names())}) and not a "
                             "package.module:function factory")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise DeployKitError(
            f"unknown model spec {spec!r}: no model family {mod_name!r} ({', '.join(FAMILIES.names())}) "
            f"and no importable module ({one_line(str(e), 160)})"
        ) from None
    except _FACTORY_FAILURES as e:  # the module's own code failed (or exited) while importing
        raise DeployKitError(f"model factory {spec!r}: importing {mod_name!r} raised {_failure(e)}") from None
    try:
        fn = getattr(module, fn_name, None)
    except _FACTORY_FAILURES as e:  # a module-level __getattr__ is code too
        raise DeployKitError(f"model factory {spec!r}: looking up {fn_name!r} raised {_failure(e)}") from None
    if not callable(fn):
        raise DeployKitError(f"module {mod_name!r} has no callable {fn_name!r}")
    try:
        model = fn()
    except _FACTORY_FAILURES as e:
        raise DeployKitError(f"model factory {spec!r} raised {_failure(e)}") from None
    if not isinstance(model, nn.Module):
        raise DeployKitError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    declared = getattr(fn, "input_shape", getattr(model, "input_shape", (1, 3, 224, 224)))
    shape = input_shape or _factory_shape(spec, declared)
    pre = _factory_preprocess(spec, getattr(fn, "preprocess", None), shape)
    task = getattr(fn, "task", "classification")
    if task not in TASKS:
        raise DeployKitError(f"model factory {spec!r} declares task {one_line(repr(task), 60)}; valid: {', '.join(TASKS)}")
    return BuiltModel(model, spec, shape, pre, task=task)


def _factory_preprocess(spec: str, declared: object, shape: tuple[int, ...]) -> Preprocess:
    """The preprocessing a factory declares (its ``preprocess`` dict), else ImageNet's for RGB.

    The dict takes the keys of a plan's ``preprocess`` (``mean``, ``std``, ``scale``, ``color``,
    ``resize``, ...); ``size`` and ``channels`` default to the input shape's.
    """
    channels = shape[1]
    if declared is None:
        # One mean/std per input channel: ImageNet's for RGB, their gray average otherwise.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,) * channels, (0.226,) * channels)
        return Preprocess(size=(shape[-2], shape[-1]), mean=mean, std=std, channels=channels,
                          color="RGB" if channels == 3 else "GRAY")
    if not isinstance(declared, dict):
        raise DeployKitError(f"model factory {spec!r} declares preprocess {one_line(repr(declared), 80)}; "
                             "want a dict like {'mean': [0, 0, 0], 'std': [1, 1, 1]}")
    doc = {"size": [shape[-2], shape[-1]], "channels": channels, "color": "RGB" if channels == 3 else "GRAY",
           **declared}
    if "mean" not in declared and "std" not in declared:
        doc["mean"], doc["std"] = ([0.449] * channels, [0.226] * channels) if channels != 3 else (
            list(IMAGENET_MEAN), list(IMAGENET_STD))
    return Preprocess.from_dict(doc, f"model factory {spec!r}'s preprocess")


def _factory_shape(spec: str, shape: object) -> tuple[int, ...]:
    """A factory's ``input_shape`` attribute, checked (it is the factory's word, not ours)."""
    try:
        dims = tuple(shape)  # type: ignore[call-overload]
    except TypeError:
        dims = ()
    if len(dims) < 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise DeployKitError(f"model factory {spec!r} declares input_shape {one_line(repr(shape), 80)}; "
                             "want positive integers like (1, 3, 224, 224)")
    return dims


def build_model(
    spec: str, weights: str | None = None, input_shape: tuple[int, ...] | None = None, pretrained: bool = True,
    trust_factory: bool | None = None,
) -> BuiltModel:
    """Build the model a MODEL spec names.

    ``spec`` itself is the caller's choice: a ``package.module:factory`` given here is
    imported and called. A factory that an artifact's plan.json names is not, unless
    ``trust_factory`` is True.

    Args:
        spec: ``family:name``, an artifact directory, or ``package.module:factory``.
        weights: optional weights file (safetensors or torch checkpoint) loaded strictly.
        input_shape: override the family's default example input shape.
        pretrained: load a family's built-in weights (the digits demo's cached training);
            False when the weights come from elsewhere anyway.
        trust_factory: let an artifact's plan.json name a ``module:function`` factory
            (None: as the enclosing :func:`trusting_factories` says, else no).

    Raises:
        DeployKitError: unknown spec, a factory that fails or is not trusted, unreadable or
            mismatched weights.
    """
    if not isinstance(spec, str):
        raise DeployKitError("a MODEL spec is a string (family:name, an artifact directory or "
                             f"package.module:factory), not {type(spec).__name__}")
    resolver = resolver_for(spec)
    if resolver is not None:  # an artifact directory (registered by the layer that loads it)
        built = resolver(spec, trust_factory=trust_factory)
    else:
        # The same opt-in covers a family's pickled checkpoint (ultralytics:best.pt).
        with trusting_factories(trusted(trust_factory)):
            built = _from_spec(spec, input_shape, pretrained)
    if weights:
        load_weights(built.model, weights)
    built.model.eval()
    return built


def model_from_spec(spec: str, input_shape: tuple[int, ...] | None = None, pretrained: bool = True) -> BuiltModel:
    """The model of a ``family:name`` or ``module:function`` spec, never read as a path.

    A factory spec runs code: callers pass specs from files through :func:`require_trust` first.
    """
    return _from_spec(spec, input_shape, pretrained)


def _from_spec(spec: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    family, sep, name = spec.partition(":")
    if not sep or not name:
        raise DeployKitError(
            f"unknown model spec {one_line(repr(spec), 120)}; valid: "
            f"{', '.join(f + ':NAME' for f in FAMILIES.names())}, an artifact directory, or package.module:factory"
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


# Families in their own modules register on import; their libraries are imported only when used.
from deploykit.zoo import timm_models, yolo  # noqa: E402,F401
