"""What a YOLO detector exports: the head's decoded output, ``[N, 4 + nc, A]``.

Ultralytics' ``Detect`` returns three things depending on its mode: in training, the raw
per-anchor box distributions (4·reg_max DFL logits) and class logits; in eval, a tuple of
the decoded tensor and those raw maps; in export mode, the decoded tensor alone, rows
0..3 the box centre and size (cx, cy, w, h) in model-input pixels (DFL expectation,
anchor points, strides), rows 4.. sigmoid class scores. That decoded tensor is what
deploykit exports: every runtime reads it the same way, ONNX parity checks it against
PyTorch, and the Engine's kernels (``kernels/include/deploykit/nms.h``) only threshold,
suppress and map it back. The decode is written here rather than by flipping the
head's ``export`` flag, so nothing global changes and end-to-end heads (YOLOv10, YOLO26:
their one-to-one branch decodes to x1y1x2y2 and ends in a top-k) export in the same
cx, cy, w, h layout; NMS on a one-to-one head's output changes little and is kept for
one code path.
"""

from __future__ import annotations

import torch
from torch import nn

YOLO_OUTPUT_FORMAT = "yolo"


def head_features(net: nn.Module, x: torch.Tensor) -> tuple[nn.Module, list[torch.Tensor]]:
    """Run an Ultralytics model's layers up to its head: ``(head, the head's input feature maps)``."""
    y: list[torch.Tensor | None] = []
    layers = list(net.model)
    for m in layers[:-1]:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in net.save else None)
    head = layers[-1]
    f = head.f
    feats = [x if j == -1 else y[j] for j in f] if isinstance(f, list) else [x if f == -1 else y[f]]
    return head, feats


def inference_branch(head: nn.Module) -> dict[str, nn.Module]:
    """The head branch Ultralytics infers with (one-to-one for an end-to-end head)."""
    if getattr(head, "one2one_cv2", None) is not None and head.end2end:
        return head.one2one
    return head.one2many


def decode_head(head: nn.Module, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """``forward_head``'s raw ``boxes`` [N, 4·reg_max, A] and ``scores`` [N, nc, A] → ``[N, 4 + nc, A]``."""
    from deploykit.zoo.yolo import import_ultralytics

    import_ultralytics()  # offline, settings in the cache, global patches undone
    from ultralytics.utils.tal import dist2bbox, make_anchors

    anchors, strides = (a.transpose(0, 1) for a in make_anchors(raw["feats"], head.stride, 0.5))
    boxes = dist2bbox(head.dfl(raw["boxes"]), anchors.unsqueeze(0), xywh=True, dim=1) * strides
    return torch.cat((boxes, raw["scores"].sigmoid()), 1)


class YoloDecoded(nn.Module):
    """An Ultralytics detector whose forward returns the decoded head output ``[N, 4 + nc, A]``.

    Shares the detector's modules (pruning the detector changes this too). ``output_format``
    tells the exporter to describe the output in the sidecar, so the Engine can serve it.
    """

    output_format = YOLO_OUTPUT_FORMAT

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, feats = head_features(self.net, x)
        return decode_head(head, head.forward_head(feats, **inference_branch(head)))
