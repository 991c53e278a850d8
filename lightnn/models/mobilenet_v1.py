"""MobileNet V1 (Howard et al., 2017, arXiv:1704.04861).

A 3x3 stem convolution followed by 13 depthwise-separable units (Table 1): each factorizes a standard K x K conv
into a depthwise K x K conv and a pointwise 1x1 conv, cutting cost by 1/N + 1/K^2 (Eq. 5). The width multiplier
alpha scales every layer's channels (cost ~ alpha^2, Table 6); the resolution multiplier is simply the input size
(cost ~ rho^2, Table 7), so one model serves any resolution (``img_size`` only sets ``default_input_size``).

At alpha = 1 and 224x224 this gives 568.7 M multiply-adds and 4.21 M conv+FC parameters (4.23 M with BN affine
parameters), the paper's 569 M / 4.2 M.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import LightnnError
from ..ops.conv import ConvBNAct, DepthwiseSeparable
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model

__all__ = ["MobileNetV1", "MOBILENET_V1_CFG"]

# Table 1 body after the 3x3/s2 stem conv with 32 filters: one depthwise-separable unit per row.
# The paper prints "s2" for the second-to-last depthwise conv, but its input is already 7x7 and its output is
# listed as 7x7 too; the 569 M Mult-Adds figure (and every implementation) uses stride 1 there.
MOBILENET_V1_CFG: tuple[tuple[int, int], ...] = (
    # out_chs, stride
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),  # the 5x 14x14x512 units ("shallow" MobileNet drops them)
    (1024, 2),
    (1024, 1),
)


class MobileNetV1(ClassifierModel):
    """Stem conv -> depthwise-separable units (``cfg``) -> global average pool -> FC.

    ``block`` is injectable (any ``fn(in_chs, out_chs, stride=..., act=...)``), so e.g. the paper's "Conv
    MobileNet" ablation (Table 4) is ``block=lambda i, o, stride, act: ConvBNAct(i, o, 3, stride, act=act)``.
    """

    def __init__(self, cfg: tuple[tuple[int, int], ...] = MOBILENET_V1_CFG, *, num_classes: int = 1000,
                 in_chans: int = 3, width_mult: float = 1.0, stem_chs: int = 32, stem_stride: int = 2,
                 act: str = "relu", drop_rate: float = 0.0, divisor: int = 8, img_size: int = 224,
                 block: Callable[..., nn.Module] = DepthwiseSeparable) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"mobilenet_v1: width_mult must be > 0, got {width_mult}")
        if img_size < 1:
            raise LightnnError(f"mobilenet_v1: img_size must be >= 1, got {img_size}")
        self.width_mult = width_mult
        self.default_input_size = (in_chans, img_size, img_size)

        def chs(c: int) -> int:
            # alpha * c rounded to a multiple of `divisor` (8 by default); exact for alpha in {1, .75, .5, .25}
            return make_divisible(c * width_mult, divisor)

        prev = chs(stem_chs)
        layers: list[nn.Module] = [ConvBNAct(in_chans, prev, 3, stem_stride, act=act)]
        for out_chs, stride in cfg:
            layers.append(block(prev, chs(out_chs), stride=stride, act=act))
            prev = chs(out_chs)
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


def _mobilenet_v1(*, num_classes: int, in_chans: int, width_mult: float, cifar: bool = False,
                  **kwargs) -> MobileNetV1:
    if cifar:  # 32x32 input: stride-1 stem, the body's four stride-2 units leave a 2x2 map
        kwargs.setdefault("stem_stride", 1)
        kwargs.setdefault("img_size", 32)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register_model(input_size=(3, 224, 224), paper="Howard et al. 2017, arXiv:1704.04861, Table 1")
def mobilenet_v1(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, **kwargs) -> MobileNetV1:
    return _mobilenet_v1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Howard et al. 2017 with a stride-1 stem for 32x32 inputs")
def mobilenet_v1_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                       **kwargs) -> MobileNetV1:
    return _mobilenet_v1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, cifar=True, **kwargs)


@register_model(input_size=(3, 224, 224), paper="Howard et al. 2017, Table 6 (0.75 MobileNet-224)")
def mobilenet_v1_075(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    return _mobilenet_v1(num_classes=num_classes, in_chans=in_chans, width_mult=0.75, **kwargs)


@register_model(input_size=(3, 224, 224), paper="Howard et al. 2017, Table 6 (0.5 MobileNet-224)")
def mobilenet_v1_050(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    return _mobilenet_v1(num_classes=num_classes, in_chans=in_chans, width_mult=0.5, **kwargs)


@register_model(input_size=(3, 224, 224), paper="Howard et al. 2017, Table 6 (0.25 MobileNet-224)")
def mobilenet_v1_025(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    return _mobilenet_v1(num_classes=num_classes, in_chans=in_chans, width_mult=0.25, **kwargs)
