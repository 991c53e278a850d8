"""Xception (Chollet, CVPR 2017, arXiv:1610.02357): a linear stack of depthwise-separable convolutions with residuals.

Fig. 5 of the paper: an entry flow (two 3x3 convs, then three residual blocks that each halve the map with a 3x3/s2
max pool and a 1x1/s2 projection shortcut), a middle flow of 8 identical residual blocks of three 728-channel
separable convs, and an exit flow (a residual block to 1024 channels, then separable convs to 1536 and 2048),
global average pooling and a logistic-regression layer. Every conv and separable conv is followed by BN; a
separable conv here is depthwise 3x3 then pointwise 1x1 with *no* BN or ReLU in between (Sec. 4.7 found an
intermediate activation hurts). At 299x299 this has 22,855,952 parameters (Table 3).

``xception_cifar`` keeps every layer and width but runs the two stem convs with stride 1 and 'same' padding so a
32x32 input reaches the middle flow at 4x4 (the ImageNet net reaches it at 19x19 from 299).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops.conv import ConvBNAct, depthwise_conv, pointwise_conv
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model

__all__ = ["SeparableConv", "XceptionBlock", "Xception", "XCEPTION_ENTRY", "XCEPTION_EXIT"]

XCEPTION_ENTRY: tuple[tuple[int, int, bool], ...] = (
    # out_chs, stride, start_with_relu   (each: 2 separable convs + max pool, 1x1 projection shortcut)
    (128, 2, False),  # the stem's last ReLU already ran
    (256, 2, True),
    (728, 2, True),
)
XCEPTION_MIDDLE = (728, 8)  # width, blocks of 3 separable convs with identity shortcuts
XCEPTION_EXIT: tuple[tuple[int, ...], int, tuple[int, ...]] = (
    (728, 1024),  # residual block: separable convs' widths, then max pool /2 with a projection shortcut
    2,
    (1536, 2048),  # separable conv + BN + ReLU each, no shortcut
)


class SeparableConv(nn.Sequential):
    """Depthwise KxK then pointwise 1x1 conv, nothing in between (Xception's ``SeparableConv``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.dw = depthwise_conv(in_chs, kernel_size, stride)
        self.pw = pointwise_conv(in_chs, out_chs)


class XceptionBlock(nn.Module):
    """``[ReLU -> SeparableConv -> BN] x len(widths)`` (optional max pool), plus a shortcut.

    The shortcut is the identity when the shape is kept, else a 1x1 conv + BN with the block's stride (Fig. 5).
    The leading ReLU is not in-place: the shortcut must see the block's pre-activation input, as in the paper.
    """

    def __init__(self, in_chs: int, widths: tuple[int, ...], stride: int = 1, start_with_relu: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise LightnnError(f"XceptionBlock: stride must be 1 or 2, got {stride}")
        layers: list[nn.Module] = []
        prev = in_chs
        for i, w in enumerate(widths):
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=i > 0))
            layers += [SeparableConv(prev, w), nn.BatchNorm2d(w)]
            prev = w
        if stride == 2:
            layers.append(nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(*layers)
        self.out_chs = prev
        if stride == 1 and in_chs == prev:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvBNAct(in_chs, prev, 1, stride, act=None, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Xception(ClassifierModel):
    """Entry flow -> middle flow -> exit flow -> global average pool -> (dropout) -> FC (Fig. 5).

    ``width_mult`` scales every width (rounded to a multiple of 8), ``middle_blocks`` the depth of the middle flow;
    ``stem_stride=1, stem_padding=1`` is the small-input variant.
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 middle_blocks: int = XCEPTION_MIDDLE[1], stem_stride: int = 2, stem_padding: int = 0,
                 drop_rate: float = 0.0, img_size: int = 299) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"xception: width_mult must be > 0, got {width_mult}")
        if middle_blocks < 0:
            raise LightnnError(f"xception: middle_blocks must be >= 0, got {middle_blocks}")
        self.width_mult = width_mult
        self.default_input_size = (in_chans, img_size, img_size)

        def chs(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        # entry-flow stem: 3x3/s2 conv with 32 filters and 3x3 conv with 64, 'valid' padding (299 -> 149 -> 147)
        layers: list[nn.Module] = [
            ConvBNAct(in_chans, chs(32), 3, stem_stride, padding=stem_padding),
            ConvBNAct(chs(32), chs(64), 3, 1, padding=stem_padding),
        ]
        prev = chs(64)
        for out_chs, stride, start_relu in XCEPTION_ENTRY:
            layers.append(XceptionBlock(prev, (chs(out_chs),) * 2, stride, start_relu))
            prev = chs(out_chs)
        mid_w = chs(XCEPTION_MIDDLE[0])
        if prev != mid_w:  # only with a custom table; the paper's entry flow ends at the middle width
            raise LightnnError(f"xception: entry flow ends at {prev} channels but the middle flow needs {mid_w}")
        layers += [XceptionBlock(prev, (mid_w,) * 3, 1, True) for _ in range(middle_blocks)]
        exit_widths, exit_stride, tail = XCEPTION_EXIT
        layers.append(XceptionBlock(prev, tuple(chs(c) for c in exit_widths), exit_stride, True))
        prev = chs(exit_widths[-1])
        for c in tail:
            layers += [SeparableConv(prev, chs(c)), nn.BatchNorm2d(chs(c)), nn.ReLU(inplace=True)]
            prev = chs(c)
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


def _xception(*, cifar: bool = False, **kwargs) -> Xception:
    # the paper puts dropout 0.5 before the logistic regression layer on ImageNet (Sec. 4.3)
    kwargs.setdefault("drop_rate", 0.0 if cifar else 0.5)
    if cifar:
        kwargs.setdefault("stem_stride", 1)
        kwargs.setdefault("stem_padding", 1)
        kwargs.setdefault("img_size", 32)
    return Xception(**kwargs)


@register_model(input_size=(3, 299, 299), test_input_size=(3, 64, 64),
                paper="Chollet 2017, arXiv:1610.02357, Fig. 5 / Table 3")
def xception(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, **kwargs) -> Xception:
    return _xception(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Chollet 2017 with stride-1 'same' stem convs for 32x32")
def xception_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, **kwargs) -> Xception:
    return _xception(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, cifar=True, **kwargs)
