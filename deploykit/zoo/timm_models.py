"""``timm:NAME``: any model ``timm.list_models()`` names, built with random weights.

The input size and mean/std come from timm's own data config of the model
(``resolve_data_config``, from its ``pretrained_cfg``); weights come only from
``--weights`` (timm's hub download is never used). Options: ``num_classes=N``.
timm is an optional extra (``pip install 'deploykit[timm]'``), imported on first use.
"""

from __future__ import annotations

import difflib
from typing import Any

from deploykit.errors import DeployKitError
from deploykit.zoo import FAMILIES
from deploykit.zoo.base import BuiltModel, Preprocess, family_options

OPTIONS: dict[str, type] = {"num_classes": int}


def import_timm() -> Any:
    """The ``timm`` module, or one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise DeployKitError("timm: specs need the timm extra: pip install 'deploykit[timm]'") from None
    return timm


@FAMILIES.register("timm")
def _timm(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    arch, opts = family_options(name, "timm", OPTIONS)
    timm = import_timm()
    valid = timm.list_models()
    # ``resnet50.a1_in1k`` names a pretrained tag of an architecture: its data config may differ.
    if arch.partition(".")[0] not in set(valid):
        close = difflib.get_close_matches(arch, valid, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise DeployKitError(f"unknown timm model {arch!r}{hint}; valid: any of the {len(valid)} names "
                             "timm.list_models() gives, e.g. resnet50, efficientnet_b0, mobilenetv3_large_100")
    model = timm.create_model(arch, pretrained=False, **opts)
    model.eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    c, h, w = cfg["input_size"]
    shape = input_shape or (1, c, h, w)
    pre = Preprocess(size=(shape[-2], shape[-1]), mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), channels=c, color="RGB" if c == 3 else "GRAY")
    return BuiltModel(model, f"timm:{name}", shape, pre)
