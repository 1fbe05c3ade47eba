"""Small constructed networks whose right answers are known."""

from __future__ import annotations

import torch
from torch import nn


class Stack(nn.Module):
    """conv a (4 -> width) -> ReLU -> conv b (width -> 6) -> mean -> linear head (6 -> 3).

    ``unused`` zeroes b's weights for that input channel: a's channel then feeds nothing.
    """

    def __init__(self, unused: int | None = None, seed: int = 0, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(4, width, 3, padding=1, bias=False)
        self.b = nn.Conv2d(width, 6, 3, padding=1, bias=False)
        self.head = nn.Linear(6, 3)
        if unused is not None:
            with torch.no_grad():
                self.b.weight[:, unused] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


class Additive(nn.Module):
    """A network whose output sum is exactly linear in which of a's channels are kept.

    a: 1 -> 6 channels with non-negative weights on non-negative inputs, then a 1x1 conv
    b whose weight on channel c is ``contrib[c]`` (channel 2 gets 0: unused). With the loss
    −Σ output, removing channel c raises the loss by contrib[c] × Σ a_c(x): an additive model.
    """

    contrib = (3.0, 1.0, 0.0, 2.0, 0.5, 4.0)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.b = nn.Conv2d(6, 1, 1, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.rand(6, 1, 3, 3, generator=torch.Generator().manual_seed(0)) + 0.1)
            self.b.weight.copy_(torch.tensor(self.contrib).view(1, 6, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)).flatten(1)


def negative_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A loss that falls as the output grows (summed over the batch, as ScoringContext wants)."""
    return -out.sum()
