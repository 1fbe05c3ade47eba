"""CIFAR ResNets (He et al. 2016, CIFAR variant) with the option-A shortcut.

Matches the key names of akamaster/pytorch_resnet_cifar10 checkpoints, so the
pretrained weights in ``../shared/data/weights`` load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.zoo.scatter import ChannelScatter

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class PadShortcut(ChannelScatter):
    """Option-A shortcut: subsample by 2 and zero-pad ``pad`` channels on each side.

    Parameter-free; input channel j lands at output channel j + pad. Once pruned,
    the mapping is an index (``index``, not saved: the plan rebuilds it): every
    output channel gathers its source or a zero channel.
    """

    def __init__(self, in_channels: int, pad: int) -> None:
        super().__init__()
        self.pad = pad
        self.in_channels = in_channels
        self.out_channels = in_channels + 2 * pad
        self.register_buffer("index", None, persistent=False)

    def scatter_sources(self) -> list[int]:
        if self.index is None:
            return [o - self.pad if self.pad <= o < self.pad + self.in_channels else -1 for o in range(self.out_channels)]
        return [int(i) if i < self.in_channels else -1 for i in self.index]

    def set_sources(self, src: list[int], in_channels: int) -> None:
        self.in_channels, self.out_channels = in_channels, len(src)
        # Index in_channels is the zero channel appended in forward.
        self.index = torch.tensor([s if s >= 0 else in_channels for s in src], dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        if self.index is None:
            return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return F.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.index.to(x.device))


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-{20,32,44,56} for 32x32 inputs, 16/32/64 channels, ``n`` blocks a stage."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)
