"""Fine-tuning and evaluating YOLO detectors: the model's own loss, KD on the head, mAP@0.5.

The loss is the detector's own: Ultralytics' ``init_criterion()`` (``v8DetectionLoss``:
task-aligned assignment, BCE on classes, CIoU + DFL on boxes, with Ultralytics' default
gains; ``E2ELoss`` for end-to-end heads), divided by the batch size (Ultralytics sums over
the batch; a mean keeps learning rates comparable across batch sizes).

With a teacher (``--kd``), the loss is ``(1 - α)·loss + α·T²·(cls_kd + box_kd)`` on the
raw head outputs of every anchor: ``cls_kd`` is the binary KL divergence between the
teacher's and the student's class probabilities at temperature T, summed and divided by
the teacher's total class probability (as YOLO's own class loss is divided by its target
mass); ``box_kd`` is the KL divergence between their box distributions (the DFL bins of
each side; squared error where the head has no DFL), averaged over anchors weighted by
the teacher's confidence, so background anchors do not drown the objects.

mAP@0.5 is torchmetrics' ``MeanAveragePrecision`` (COCO-style 101-point interpolation,
pycocotools backend) on the decoded head after torchvision's ``batched_nms`` with
Ultralytics' validation settings (conf 0.001, IoU 0.7, 300 detections), in model-input
pixels against the letterboxed ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.data import batches
from deploykit.errors import DeployKitError
from deploykit.train.distributed import Dist
from deploykit.train.loop import TASKS, TrainConfig
from deploykit.zoo.base import Preprocess

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.7, 300


def _head(model: nn.Module) -> nn.Module:
    return model.model[-1]


def _raw(out: Any) -> dict[str, torch.Tensor]:
    """The raw head dict (``boxes`` [N, 4·reg_max, A] logits, ``scores`` [N, nc, A] logits) of a model's output:
    training mode returns it, eval mode a ``(decoded, raw)`` tuple; end-to-end heads nest one-to-many inside."""
    raw = out[1] if isinstance(out, tuple) else out
    return raw["one2many"] if "one2many" in raw else raw


def head_kd(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], t: float) -> torch.Tensor:
    """KD between two raw YOLO head outputs (see the module docstring)."""
    s_cls, t_cls = student["scores"], teacher["scores"].detach()
    t_prob = torch.sigmoid(t_cls / t)
    # Binary KL = BCE against the teacher's probabilities minus their entropy (zero when they agree).
    kl_cls = (F.binary_cross_entropy_with_logits(s_cls / t, t_prob, reduction="none")
              - F.binary_cross_entropy_with_logits(t_cls / t, t_prob, reduction="none"))
    cls_kd = kl_cls.sum() / t_prob.sum().clamp(min=1.0)
    weight = torch.sigmoid(t_cls).amax(1)  # [N, A]: the teacher's confidence per anchor
    s_box, t_box = student["boxes"], teacher["boxes"].detach()
    n, c, a = s_box.shape
    bins = c // 4
    if bins > 1:
        s_log = F.log_softmax(s_box.view(n, 4, bins, a) / t, dim=2)
        t_log = F.log_softmax(t_box.view(n, 4, bins, a) / t, dim=2)
        per_anchor = (t_log.exp() * (t_log - s_log)).sum(2).mean(1)
    else:
        per_anchor = (s_box - t_box).pow(2).mean(1)
    box_kd = (per_anchor * weight).sum() / weight.sum().clamp(min=1e-6)
    return t * t * (cls_kd + box_kd)


class YoloDetectionTask:
    """An Ultralytics YOLO detector: its own loss, head KD, mAP@0.5 (see the module docstring)."""

    metric = "map50"
    augment = False  # crop/flip of the image alone would misplace the boxes

    def __init__(self) -> None:
        self._criteria: dict[int, Any] = {}

    def criterion(self, model: nn.Module) -> Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, Any]]:
        """The model's own loss function (built once per model; it reads only the head's strides and classes)."""
        key = id(model)
        if key not in self._criteria:
            if not hasattr(model, "init_criterion"):
                raise DeployKitError(f"{type(model).__name__} has no loss of its own; fine-tuning a detector needs an "
                                     "Ultralytics YOLO (ultralytics:yolov8n.yaml, ...)")
            if not hasattr(model, "args") or not hasattr(getattr(model, "args"), "box"):
                from deploykit.zoo.yolo import import_ultralytics

                import_ultralytics()  # offline, settings in the cache, global patches undone
                from ultralytics.cfg import get_cfg

                model.args = get_cfg()  # Ultralytics' default loss gains (box 7.5, cls 0.5, dfl 1.5)
            self._criteria[key] = model.init_criterion()
        return self._criteria[key]

    def _det_loss(self, model: nn.Module, out: Any, y: torch.Tensor) -> torch.Tensor:
        batch = {"batch_idx": y[:, 0], "cls": y[:, 1], "bboxes": y[:, 2:6]}
        loss, _ = self.criterion(model)(out, batch)
        return loss.sum()  # Ultralytics' total, i.e. summed over the batch's images

    def loss(self, model: nn.Module, out: Any, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
             cfg: TrainConfig) -> torch.Tensor:
        det = self._det_loss(model, out, y) / x.shape[0]
        if teacher is None:
            return det
        with torch.no_grad():
            t_out = teacher(x)
        return (1 - cfg.kd_alpha) * det + cfg.kd_alpha * head_kd(_raw(out), _raw(t_out), cfg.kd_temperature)

    def scoring_loss(self, model: nn.Module) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        return lambda out, y: self._det_loss(model, out, y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, ds: Any, pre: Preprocess, batch_size: int = 64, dist: Dist | None = None,
                 device: str = "cpu") -> float:
        """mAP@0.5 in percent (every process evaluates the whole set: small sets, identical answers)."""
        from torchmetrics.detection import MeanAveragePrecision
        from torchvision.ops import batched_nms, box_convert

        from deploykit.zoo.yolo_export import YoloDecoded

        was_training = model.training
        model.eval()
        decoded = YoloDecoded(model)
        metric = MeanAveragePrecision(box_format="xyxy", iou_thresholds=[0.5], backend="pycocotools")
        scale = torch.tensor([pre.size[1], pre.size[0]] * 2, dtype=torch.float32)
        try:
            for x, y in batches(ds, pre, batch_size):
                head = decoded(x.to(device)).float().cpu()
                preds, targets = [], []
                for i in range(len(x)):
                    scores, cls = head[i, 4:].max(0)
                    keep = scores > EVAL_CONF
                    boxes = box_convert(head[i, :4].T[keep], "cxcywh", "xyxy")
                    k = batched_nms(boxes, scores[keep], cls[keep], EVAL_IOU)[:EVAL_MAX_DET]
                    preds.append({"boxes": boxes[k], "scores": scores[keep][k], "labels": cls[keep][k]})
                    t = y[y[:, 0] == i]
                    targets.append({"boxes": box_convert(t[:, 2:6] * scale, "cxcywh", "xyxy"),
                                    "labels": t[:, 1].long()})
                metric.update(preds, targets)
            return 100.0 * float(metric.compute()["map_50"])
        finally:
            model.train(was_training)

    def check_compatible(self, built: Any, datasets: list[Any]) -> None:
        model = built.model
        datasets = [ds for ds in datasets if ds is not None]
        if not datasets:  # pruning alone needs no loss (a torchvision detector compresses without data)
            return
        if not hasattr(model, "init_criterion"):
            raise DeployKitError(f"{built.spec} is a detector without a loss deploykit can train with; fine-tuning and "
                                 "evaluating detectors needs an Ultralytics YOLO (ultralytics:yolov8n.yaml, ...)")
        nc = int(_head(model).nc)
        for ds in datasets:
            if getattr(ds, "task", "classification") != "detection":
                raise DeployKitError(f"data {ds.spec} holds class labels, not boxes; a detector needs detection data: "
                                     "yolo:DIR (images/ and labels/ in YOLO format)")
            if len(ds.classes) != nc:
                raise DeployKitError(f"data {ds.spec} has {len(ds.classes)} classes but {built.spec} detects {nc}; "
                                     f"build it with nc={len(ds.classes)} (ultralytics:CFG,nc={len(ds.classes)})")


TASKS.register("detection", YoloDetectionTask())
