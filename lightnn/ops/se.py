"""Squeeze-and-excitation (Hu et al. 2018) as used by MnasNet and MobileNetV3."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import get_act
from .conv import ActLike


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(avgpool(x))))) with 1x1 convs (with bias) as the two FCs.

    ``rd_chs`` is the squeezed width; callers pick it (MobileNetV3: make_divisible(C/4, 8); MnasNet: C/4 of the
    block input).
    """

    def __init__(self, chs: int, rd_chs: int, act: ActLike = "relu", gate: ActLike = "sigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = get_act(act)
        self.fc2 = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = get_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        return x * s
