"""``ultralytics:CFG``: Ultralytics YOLO detectors and classifiers, with a traceable core.

``ultralytics:yolov8n.yaml`` (any model config Ultralytics ships: ``yolo11n.yaml``,
``yolov8n-cls.yaml``, ``yolo26n.yaml``) builds the architecture with random weights;
``,nc=N`` sets the number of classes. ``ultralytics:PATH.pt`` reads a trained checkpoint,
which is a pickle (loading it runs code the file names): it needs ``--trust-factory``
(Python: ``trust_factory=True``); the artifact then records the config spec, never the file.

The channel graph traces :class:`YoloCore`: the model's layers as Ultralytics runs them,
returning the detection head's *raw* outputs per level (box distribution, 4·reg_max
channels, then class logits), without the decode (DFL, anchors) the graph need not follow.
Those head convolutions write model outputs, so their channels are never pruned. The
core mirrors the Ultralytics module paths (``model.22.cv2.0``) and shares its modules:
pruning the core prunes the detector. Export writes the decoded head of the branch that
inference uses, ``[N, 4 + nc, A]`` (:class:`deploykit.zoo.yolo_export.YoloDecoded`), which
the Engine's decode + NMS kernels serve.

Ultralytics is an optional extra (``pip install 'deploykit[yolo]'``), imported on first
use with its settings directory in deploykit's cache, offline mode on (no network check
at import), and ``torch.save`` left as torch's (Ultralytics replaces it at import).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.zoo import FAMILIES, trusted
from deploykit.zoo.base import BuiltModel, Preprocess, family_options
from deploykit.zoo.yolo_export import YoloDecoded, head_features

OPTIONS: dict[str, type] = {"nc": int}
YOLO_SIDE = 640
# Ultralytics' own preprocessing: RGB, x / 255, no mean/std, letterboxed with gray 114.
YOLO_PREPROCESS = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 255.0, "resize": "letterbox",
                   "pad_value": 114.0}
_CFG = re.compile(r"[\w.\-]+\.ya?ml")


def ultralytics_env() -> dict[str, str]:
    """Environment Ultralytics reads at import: offline, quiet, settings under deploykit's cache."""
    from deploykit.zoo.digits import cache_dir

    return {"YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "YOLO_CONFIG_DIR": str(cache_dir() / "ultralytics")}


def import_ultralytics() -> Any:
    """``ultralytics.nn.tasks``, imported without network access or writes into the user's home.

    Raises:
        DeployKitError: the ``yolo`` extra is not installed.
    """
    for key, value in ultralytics_env().items():
        # An explicit user setting of the config dir wins; offline is forced (never a DNS lookup).
        if key == "YOLO_OFFLINE" or key not in os.environ:
            os.environ[key] = value
    from PIL import Image

    save, image_open = torch.save, Image.open
    try:
        import ultralytics.nn.tasks as tasks
    except ImportError:
        raise DeployKitError("ultralytics: specs need the yolo extra: pip install 'deploykit[yolo]'") from None
    finally:
        torch.save = save  # Ultralytics patches torch.save globally at import
        # ... and PIL.Image.open, which then answers an unreadable image by pip-installing a HEIF plugin.
        Image.open = image_open
    return tasks


def shipped_configs() -> list[str]:
    """Model config names Ultralytics ships (``yolov8n.yaml`` scales included)."""
    tasks = import_ultralytics()
    root = Path(tasks.__file__).resolve().parents[1] / "cfg" / "models"
    names = set()
    for p in root.rglob("*.yaml"):
        names.add(p.name)
        # yolov8.yaml is built at every scale: yolov8n.yaml ... yolov8x.yaml
        m = re.fullmatch(r"(yolo(?:e-)?v?\d+)(.*)\.yaml", p.name)
        if m:
            names.update(f"{m.group(1)}{s}{m.group(2)}.yaml" for s in "nslmx")
    return sorted(names)


def _raw_head(head: nn.Module, feats: list[torch.Tensor], branches: list[str]) -> list[torch.Tensor]:
    """Per level and branch: ``cat(box distribution, class logits)`` of a Detect head."""
    out = []
    for branch in branches:
        box, cls = getattr(head, branch)["box_head"], getattr(head, branch)["cls_head"]
        if box is None or cls is None:
            continue
        out += [torch.cat((box[i](f), cls[i](f)), 1) for i, f in enumerate(feats)]
    return out


class YoloCore(nn.Module):
    """An Ultralytics model's layers, returning raw head outputs (Detect) or logits (Classify).

    Args:
        net: the Ultralytics ``DetectionModel`` / ``ClassificationModel``.
        inference_only: only the branch inference uses (export); else every branch (the graph
            must see every consumer of the neck, training branches included).
    """

    def __init__(self, net: nn.Module, inference_only: bool = False) -> None:
        super().__init__()
        self.model = net.model  # same Sequential: paths model.N as in Ultralytics
        self.save = list(net.save)
        self.inference_only = inference_only

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        head, feats = head_features(self, x)
        if hasattr(head, "one2many"):  # Detect and its subclasses
            e2e = getattr(head, "one2one_cv2", None) is not None
            if self.inference_only:
                branches = ["one2one" if e2e and head.end2end else "one2many"]
            else:
                branches = ["one2many", "one2one"] if e2e else ["one2many"]
            return tuple(_raw_head(head, feats, branches))
        # Classify: logits, without the softmax Ultralytics applies at inference
        z = torch.cat(feats, 1) if len(feats) > 1 else feats[0]
        return head.linear(head.drop(head.pool(head.conv(z)).flatten(1)))


def _task(net: nn.Module) -> str:
    head = net.model[-1]
    if hasattr(head, "one2many"):
        if type(head).__name__ not in ("Detect", "v10Detect"):
            raise DeployKitError(f"ultralytics: {type(head).__name__} heads are not supported; valid: detection "
                                 "(Detect) and classification (Classify) models")
        return "detection"
    if type(head).__name__ == "Classify":
        return "classification"
    raise DeployKitError(f"ultralytics: {type(head).__name__} heads are not supported; valid: Detect, Classify")


def _build_cfg(cfg: str, nc: int | None) -> nn.Module:
    tasks = import_ultralytics()
    valid = shipped_configs()
    if cfg not in valid:
        from deploykit.registry import unknown_name_message

        raise DeployKitError(unknown_name_message("Ultralytics model config", cfg, valid))
    cls = tasks.ClassificationModel if "-cls" in cfg else tasks.DetectionModel
    kwargs = {"nc": nc} if nc is not None else {}
    try:
        return cls(cfg, verbose=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - a config Ultralytics itself cannot build (e.g. a missing module)
        raise DeployKitError(f"ultralytics:{cfg}: Ultralytics cannot build it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _load_checkpoint(path: Path) -> tuple[nn.Module, str]:
    """A trained ``.pt`` (a pickle; the caller opted in) and the config spec that rebuilds its architecture."""
    if not path.is_file():
        raise DeployKitError(f"ultralytics: checkpoint {path} does not exist")
    if not trusted(None):
        raise DeployKitError(f"{path} is an Ultralytics checkpoint, a pickle: loading it runs code the file names; "
                             "pass --trust-factory (Python: trust_factory=True) if you trust it")
    import_ultralytics()
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        net = (ckpt.get("ema") or ckpt["model"]) if isinstance(ckpt, dict) else ckpt
        net = net.float()
        yaml_file, nc = Path(net.yaml["yaml_file"]).name, int(net.yaml["nc"])
    except Exception as e:  # noqa: BLE001 - not an Ultralytics checkpoint
        raise DeployKitError(f"ultralytics: {path} is not an Ultralytics checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    spec = f"{yaml_file},nc={nc}"
    ref = _build_cfg(yaml_file, nc)
    own, theirs = ref.state_dict(), net.state_dict()
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        raise DeployKitError(f"ultralytics: {path}'s architecture is not the shipped {yaml_file} with nc={nc}: "
                             "only checkpoints of shipped configs can be rebuilt from a plan")
    ref.load_state_dict(theirs)
    return ref, spec


@FAMILIES.register("ultralytics")
def _ultralytics(name: str, input_shape: tuple[int, ...] | None, pretrained: bool) -> BuiltModel:
    if name.endswith(".pt") or "/" in name or os.sep in name:
        net, name = _load_checkpoint(Path(name))
    else:
        cfg, opts = family_options(name, "ultralytics", OPTIONS)
        if not _CFG.fullmatch(cfg):
            raise DeployKitError(f"ultralytics:{name}: give a model config (yolov8n.yaml, yolo11n.yaml, "
                                 "yolov8n-cls.yaml) or a trained .pt checkpoint")
        net = _build_cfg(cfg, opts.get("nc"))
    net.eval()
    task = _task(net)
    side = 224 if task == "classification" else YOLO_SIDE
    shape = input_shape or (1, 3, side, side)
    if task == "classification":
        # Ultralytics classifiers take x / 255 too, center-cropped rather than letterboxed.
        pre = Preprocess(size=(shape[-2], shape[-1]), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        core = YoloCore(net).eval()
        return BuiltModel(core, f"ultralytics:{name}", shape, pre)
    pre = Preprocess(size=(shape[-2], shape[-1]), **YOLO_PREPROCESS)  # type: ignore[arg-type]
    labels = [str(v) for _, v in sorted(getattr(net, "names", {}).items())] or None
    return BuiltModel(net, f"ultralytics:{name}", shape, pre, labels=labels, task="detection",
                      graph_module=YoloCore(net).eval(), export_module=YoloDecoded(net).eval())
