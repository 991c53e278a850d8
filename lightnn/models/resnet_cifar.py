"""CIFAR ResNets (He et al., CVPR 2016, arXiv:1512.03385, Sec. 4.2 and Table 6).

A 3x3 conv with 16 filters, then three stages of n basic blocks each on 32x32, 16x16 and 8x8 maps with 16, 32
and 64 filters (6n + 2 weighted layers), global average pool, FC. Shortcuts are identities everywhere; where the
map halves and the width doubles, option A (parameter-free) subsamples the input with stride 2 and pads the new
channels with zeros. This gives Table 6's 0.27 / 0.46 / 0.66 / 0.85 / 1.7 M parameters for ResNet-20/32/44/56/110.
Option B (a 1x1 projection conv + BN where shapes change) is available as ``shortcut="B"``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError
from ..ops.conv import ConvBNAct
from ._base import ClassifierModel, init_weights
from ._registry import register_model

__all__ = ["PadShortcut", "BasicBlockCifar", "ResNetCifar", "RESNET_CIFAR_STAGES"]

RESNET_CIFAR_STAGES: tuple[tuple[int, int], ...] = (
    # width, stride of the stage's first block (each stage has n blocks)
    (16, 1),
    (32, 2),
    (64, 2),
)


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel and zero-pad ``extra`` new channels, no parameters.

    Output channel ``front + i`` is input channel ``i``; channels ``[0, front)`` and ``[front + in_chs, out)`` are
    zero. The default puts half of the zeros in front (``front = extra // 2``), the layout of the widely used
    CIFAR ResNet re-implementations, so their weights load with identical outputs. The pruner reads ``front``,
    ``extra`` and :meth:`channel_map` to know which input channel feeds which output channel.
    """

    def __init__(self, stride: int = 2, extra: int = 0, front: int | None = None) -> None:
        super().__init__()
        if stride < 1:
            raise LightnnError(f"PadShortcut: stride must be >= 1, got {stride}")
        if extra < 0:
            raise LightnnError(f"PadShortcut: extra channels must be >= 0, got {extra}")
        front = extra // 2 if front is None else front
        if not 0 <= front <= extra:
            raise LightnnError(f"PadShortcut: front={front} zero channels must lie in [0, extra={extra}]")
        self.stride, self.extra, self.front = stride, extra, front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.front, self.extra - self.front))
        return x

    def channel_map(self, in_chs: int) -> torch.Tensor:
        """``m`` with ``out[:, m[i]] = in[:, i]`` for every input channel ``i``."""
        return torch.arange(in_chs) + self.front

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra={self.extra}, front={self.front}"


class BasicBlockCifar(nn.Module):
    """Two 3x3 conv-BN layers, the shortcut added before the last ReLU (Fig. 2 of the paper)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_chs, out_chs, 3, stride, act="relu")
        self.conv2 = ConvBNAct(out_chs, out_chs, 3, 1, act=None)
        if stride == 1 and in_chs == out_chs:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            if out_chs < in_chs:
                raise LightnnError(f"BasicBlockCifar: option-A shortcut can only add channels, got in={in_chs}, "
                                   f"out={out_chs}")
            self.shortcut = PadShortcut(stride, out_chs - in_chs)
        else:  # option B: projection only where the shape changes
            self.shortcut = ConvBNAct(in_chs, out_chs, 1, stride, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetCifar(ClassifierModel):
    """ResNet-(6n+2) for 32x32 inputs: conv3x3(16) -> 3 stages x n blocks -> global average pool -> FC."""

    def __init__(self, depth: int = 20, *, num_classes: int = 10, in_chans: int = 3, width: int = 16,
                 shortcut: str = "A", drop_rate: float = 0.0, img_size: int = 32,
                 block: Callable[..., nn.Module] = BasicBlockCifar,
                 stages: tuple[tuple[int, int], ...] = RESNET_CIFAR_STAGES) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise LightnnError(f"resnet_cifar: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), "
                               f"got {depth}")
        if shortcut not in ("A", "B"):
            raise LightnnError(f"resnet_cifar: shortcut must be 'A' (zero-pad) or 'B' (projection), got {shortcut!r}")
        if width < 1:
            raise LightnnError(f"resnet_cifar: width must be >= 1, got {width}")
        n = (depth - 2) // 6
        self.depth, self.shortcut_type = depth, shortcut
        self.default_input_size = (in_chans, img_size, img_size)
        scale = width / RESNET_CIFAR_STAGES[0][0]
        prev = width
        layers: list[nn.Module] = [ConvBNAct(in_chans, prev, 3, 1, act="relu")]
        for stage_width, stride in stages:
            out_chs = max(1, int(round(stage_width * scale)))
            blocks = []
            for i in range(n):
                blocks.append(block(prev, out_chs, stride if i == 0 else 1, shortcut))
                prev = out_chs
            layers.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


def _resnet_cifar(depth: int, **kwargs) -> ResNetCifar:
    return ResNetCifar(depth, **kwargs)


@register_model(input_size=(3, 32, 32), paper="He et al. 2016, Table 6 (0.27 M params)")
def resnet20(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNetCifar:
    return _resnet_cifar(20, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(input_size=(3, 32, 32), paper="He et al. 2016, Table 6 (0.46 M params)")
def resnet32(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNetCifar:
    return _resnet_cifar(32, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(input_size=(3, 32, 32), paper="He et al. 2016, Table 6 (0.66 M params)")
def resnet44(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNetCifar:
    return _resnet_cifar(44, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(input_size=(3, 32, 32), paper="He et al. 2016, Table 6 (0.85 M params)")
def resnet56(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNetCifar:
    return _resnet_cifar(56, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(input_size=(3, 32, 32), paper="He et al. 2016, Table 6 (1.7 M params)")
def resnet110(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNetCifar:
    return _resnet_cifar(110, num_classes=num_classes, in_chans=in_chans, **kwargs)
