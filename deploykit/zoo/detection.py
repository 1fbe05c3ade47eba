"""torchvision detectors, with a traceable core for the channel graph.

A detector's post-processing (anchors, NMS) cannot be traced, and its heads are
shared by every FPN level. The *core* runs the backbone, the FPN and the heads on
a batch tensor, so the dependency graph sees each shared head consume every level:
the FPN output channels of all levels become one group, and the heads' input
channels shrink with it. The core mirrors the detector's module paths and shares
its modules, so pruning the core prunes the detector, which still runs end to end
on images. Export takes the backbone + FPN (the part that runs as one graph on
every deployment target).
"""

from __future__ import annotations

import torch
from torch import nn

from deploykit.zoo.base import IMAGENET_MEAN, IMAGENET_STD, BuiltModel, Preprocess


def mirror(root: nn.Module, paths: list[str]) -> nn.Module:
    """A module tree holding ``root``'s submodules at the same dotted paths."""
    core = nn.Module()
    for path in paths:
        *parents, leaf = path.split(".")
        obj, src = core, root
        for name in parents:
            src = getattr(src, name)
            if not hasattr(obj, name):
                obj.add_module(name, nn.Module())
            obj = getattr(obj, name)
        obj.add_module(leaf, getattr(src, leaf))
    return core


class _Core(nn.Module):
    def __init__(self, det: nn.Module, paths: list[str]) -> None:
        super().__init__()
        for name, child in mirror(det, paths).named_children():
            self.add_module(name, child)


class FasterRCNNCore(_Core):
    """Backbone + FPN, RPN head on every level, box head on two fixed boxes per image."""

    def __init__(self, det: nn.Module) -> None:
        super().__init__(det, ["backbone", "rpn.head", "roi_heads.box_roi_pool", "roi_heads.box_head",
                               "roi_heads.box_predictor"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        objectness, deltas = self.rpn.head(list(feats.values()))
        h, w = x.shape[-2:]
        boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w * 0.9, h * 0.9]], device=x.device)
        pooled = self.roi_heads.box_roi_pool(feats, [boxes] * x.shape[0], [(h, w)] * x.shape[0])
        scores, box = self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))
        return (*objectness, *deltas, scores, box)


class RetinaNetCore(_Core):
    """Backbone + FPN and the shared classification and regression heads on every level.

    The heads' convolutions are called level by level, without the detector's
    reshape and concatenation of anchors, which the graph need not (and, at
    hundreds of thousands of anchors, should not) follow.
    """

    def __init__(self, det: nn.Module) -> None:
        super().__init__(det, ["backbone", "head.classification_head.conv", "head.classification_head.cls_logits",
                               "head.regression_head.conv", "head.regression_head.bbox_reg"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls, reg = self.head.classification_head, self.head.regression_head
        outs = []
        for f in self.backbone(x).values():
            outs += [cls.cls_logits(cls.conv(f)), reg.bbox_reg(reg.conv(f))]
        return tuple(outs)


class BackboneFPN(nn.Module):
    """What export writes: the FPN levels as a tuple of tensors."""

    def __init__(self, det: nn.Module) -> None:
        super().__init__()
        self.backbone = det.backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x).values())


CORES: dict[str, type[_Core]] = {"FasterRCNN": FasterRCNNCore, "RetinaNet": RetinaNetCore}


def wrap_detector(det: nn.Module, spec: str, input_shape: tuple[int, ...]) -> BuiltModel:
    """A BuiltModel whose graph runs the detector's core and whose export is its backbone + FPN."""
    from deploykit.errors import DeployKitError

    kind = next((k for k in CORES if any(c.__name__ == k for c in type(det).__mro__)), None)
    if kind is None:
        raise DeployKitError(f"{spec}: detector type {type(det).__name__} is not supported; valid: {', '.join(CORES)}")
    det.eval()
    pre = Preprocess(size=(input_shape[-2], input_shape[-1]), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return BuiltModel(det, spec, input_shape, pre, task="detection",
                      graph_module=CORES[kind](det).eval(), export_module=BackboneFPN(det).eval())
