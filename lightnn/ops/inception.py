"""Inception-v3 modules (Szegedy et al., CVPR 2016, arXiv:1512.00567), named as in torchvision.

The paper's design principles (Sec. 2) show in the factorizations: a 5x5 conv as two 3x3 convs (Fig. 5),
an n x n conv as 1 x n then n x 1 (Fig. 6, n = 7 on the 17x17 grid), expanded filter banks of parallel 1x3 / 3x1
convs on the coarsest 8x8 grid (Fig. 7), and grid reduction by parallel stride-2 conv and pool branches
concatenated, instead of pooling before or after an expensive conv (Fig. 10). Branches are concatenated in the
order torchvision uses, so torchvision's weights load unchanged.

=================  ==========================  ==============
torchvision name   role                        paper
=================  ==========================  ==============
InceptionA         35x35 module                Fig. 5
InceptionB         35 -> 17 grid reduction     Fig. 10
InceptionC         17x17 factorized 7x7        Fig. 6
InceptionD         17 -> 8 grid reduction      Fig. 10 (7x7 variant)
InceptionE         8x8 expanded filter bank    Fig. 7
InceptionAux       auxiliary head on 17x17     Sec. 4 (BN-auxiliary)
=================  ==========================  ==============

Every conv is a :class:`ConvBNAct` (conv without bias, BatchNorm eps 1e-3, ReLU) built by an injectable
``conv_block(in_chs, out_chs, kernel_size, stride=1, padding=0)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import ConvBNAct

__all__ = ["basic_conv", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionAux"]

ConvBlock = Callable[..., nn.Module]


def basic_conv(in_chs: int, out_chs: int, kernel_size: int | tuple[int, int], stride: int = 1,
               padding: int | tuple[int, int] = 0) -> ConvBNAct:
    """conv (no bias, explicit padding: Inception-v3 mostly uses 'valid' convs) -> BN(eps=1e-3) -> ReLU."""
    return ConvBNAct(in_chs, out_chs, kernel_size, stride, padding=padding, bn_eps=1e-3)


class InceptionA(nn.Module):
    """1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1; 224 + ``pool_features`` output channels."""

    def __init__(self, in_chs: int, pool_features: int, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        self.branch1x1 = conv_block(in_chs, 64, 1)
        self.branch5x5_1 = conv_block(in_chs, 48, 1)
        self.branch5x5_2 = conv_block(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = conv_block(in_chs, 64, 1)
        self.branch3x3dbl_2 = conv_block(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, 3, padding=1)
        self.branch_pool = conv_block(in_chs, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat((b1, b5, b3, bp), 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3 s2 | 1x1 -> 3x3 -> 3x3 s2 | max-pool s2; 480 + in_chs outputs."""

    def __init__(self, in_chs: int, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        self.branch3x3 = conv_block(in_chs, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv_block(in_chs, 64, 1)
        self.branch3x3dbl_2 = conv_block(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv_block(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat((b3, b3d, F.max_pool2d(x, 3, 2)), 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convs factorized into 1x7 and 7x1 (``channels_7x7`` inner width); 768 outputs."""

    def __init__(self, in_chs: int, channels_7x7: int, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = conv_block(in_chs, 192, 1)
        self.branch7x7_1 = conv_block(in_chs, c7, 1)
        self.branch7x7_2 = conv_block(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv_block(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv_block(in_chs, c7, 1)
        self.branch7x7dbl_2 = conv_block(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv_block(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv_block(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv_block(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = conv_block(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        b7d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(b7d))))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat((b1, b7, b7d, bp), 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> 3x3 s2 | 1x1 -> 1x7 -> 7x1 -> 3x3 s2 | max-pool s2; 512 + in_chs outputs."""

    def __init__(self, in_chs: int, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        self.branch3x3_1 = conv_block(in_chs, 192, 1)
        self.branch3x3_2 = conv_block(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv_block(in_chs, 192, 1)
        self.branch7x7x3_2 = conv_block(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv_block(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv_block(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat((b3, b7, F.max_pool2d(x, 3, 2)), 1)


class InceptionE(nn.Module):
    """8x8 module whose 3x3 outputs split into parallel 1x3 and 3x1 convs (expanded filter bank); 2048 outputs."""

    def __init__(self, in_chs: int, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        self.branch1x1 = conv_block(in_chs, 320, 1)
        self.branch3x3_1 = conv_block(in_chs, 384, 1)
        self.branch3x3_2a = conv_block(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv_block(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv_block(in_chs, 448, 1)
        self.branch3x3dbl_2 = conv_block(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = conv_block(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv_block(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = conv_block(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat((self.branch3x3_2a(b3), self.branch3x3_2b(b3)), 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat((self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)), 1)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat((b1, b3, b3d, bp), 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: 5x5 s3 avg-pool -> 1x1 (128) -> 5x5 (768) -> pool -> FC.

    The paper (Sec. 4) finds it acts as a regularizer, more so with BatchNorm in it. torchvision's head needs the
    full 17x17 grid (299x299 inputs); ``adaptive=True`` pools to 5x5 adaptively so small-input variants can use it.
    """

    def __init__(self, in_chs: int, num_classes: int, conv_block: ConvBlock = basic_conv, adaptive: bool = False) -> None:
        super().__init__()
        self.adaptive = adaptive
        self.conv0 = conv_block(in_chs, 128, 1)
        self.conv1 = conv_block(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 5) if self.adaptive else F.avg_pool2d(x, 5, 3)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
