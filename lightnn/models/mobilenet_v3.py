"""MobileNet V3 Large/Small (Howard et al., ICCV 2019, arXiv:1905.02244).

The paper's bneck tables fed to :class:`~lightnn.models.ir_net.IRNet`: inverted residuals with optional
squeeze-excite (h-sigmoid gate, a quarter of the expanded width) and h-swish in the deeper half, a 1x1 conv to 6x
the last block width, then a pooled 1x1 "head" expansion (Linear -> h-swish) before the classifier (paper
Sec. 5.3 "efficient last stage"). Matches torchvision ``mobilenet_v3_large`` / ``mobilenet_v3_small`` exactly
(5,483,032 / 2,542,856 parameters), including BatchNorm eps=1e-3, momentum=0.01.
"""

from __future__ import annotations

from ._base import make_divisible
from ._registry import register_model
from .ir_net import IRNet, IRStage, cifar_table

__all__ = ["MOBILENET_V3_STEM", "MOBILENET_V3_LARGE_TABLE", "MOBILENET_V3_SMALL_TABLE"]


def _bneck(kernel: int, exp: int, out: int, se: bool, act: str, stride: int) -> IRStage:
    """One row of the paper's tables: the expanded width is given, not a ratio (the input is the row above's)."""
    return IRStage(1, out, 1, stride, kernel, 0.25 if se else 0.0, act, exp_chs=exp)


# 3x3 stride-2 conv to 16, h-swish
MOBILENET_V3_STEM = (IRStage(1, 16, 1, 2, op="conv", skip=False),)

# Paper Table 1 (= torchvision _mobilenet_v3_conf("mobilenet_v3_large"))
MOBILENET_V3_LARGE_TABLE: tuple[IRStage, ...] = (
    #      k, exp, out, se, act, s
    _bneck(3, 16, 16, False, "relu", 1),
    _bneck(3, 64, 24, False, "relu", 2),
    _bneck(3, 72, 24, False, "relu", 1),
    _bneck(5, 72, 40, True, "relu", 2),
    _bneck(5, 120, 40, True, "relu", 1),
    _bneck(5, 120, 40, True, "relu", 1),
    _bneck(3, 240, 80, False, "hswish", 2),
    _bneck(3, 200, 80, False, "hswish", 1),
    _bneck(3, 184, 80, False, "hswish", 1),
    _bneck(3, 184, 80, False, "hswish", 1),
    _bneck(3, 480, 112, True, "hswish", 1),
    _bneck(3, 672, 112, True, "hswish", 1),
    _bneck(5, 672, 160, True, "hswish", 2),
    _bneck(5, 960, 160, True, "hswish", 1),
    _bneck(5, 960, 160, True, "hswish", 1),
)

# Paper Table 2 (= torchvision _mobilenet_v3_conf("mobilenet_v3_small"))
MOBILENET_V3_SMALL_TABLE: tuple[IRStage, ...] = (
    #      k, exp, out, se, act, s
    _bneck(3, 16, 16, True, "relu", 2),
    _bneck(3, 72, 24, False, "relu", 2),
    _bneck(3, 88, 24, False, "relu", 1),
    _bneck(5, 96, 40, True, "hswish", 2),
    _bneck(5, 240, 40, True, "hswish", 1),
    _bneck(5, 240, 40, True, "hswish", 1),
    _bneck(5, 120, 48, True, "hswish", 1),
    _bneck(5, 144, 48, True, "hswish", 1),
    _bneck(5, 288, 96, True, "hswish", 2),
    _bneck(5, 576, 96, True, "hswish", 1),
    _bneck(5, 576, 96, True, "hswish", 1),
)


def _mobilenet_v3(table: tuple[IRStage, ...], head_fc: int, cifar: bool, num_classes: int, in_chans: int,
                  width_mult: float, drop_rate: float) -> IRNet:
    stem = MOBILENET_V3_STEM
    if cifar:  # 32x32: the stem and the first stride-2 row at stride 1 (32 -> 4)
        stem, table = cifar_table(stem), cifar_table(table)
    last = make_divisible(table[-1].channels * width_mult, 8)
    # torchvision scales the head Linear with the width too (the paper's TF models do not)
    return IRNet(table, stem=stem, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, act="hswish",
                 head_chs=6 * last, head_fc_chs=make_divisible(head_fc * width_mult, 8), drop_rate=drop_rate,
                 se_gate="hsigmoid", se_from="exp", se_round_to=8, bn_eps=1e-3, bn_momentum=0.01)


@register_model(paper="arXiv:1905.02244")
def mobilenet_v3_large(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v3(MOBILENET_V3_LARGE_TABLE, 1280, False, num_classes, in_chans, width_mult, drop_rate)


@register_model(paper="arXiv:1905.02244")
def mobilenet_v3_small(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v3(MOBILENET_V3_SMALL_TABLE, 1024, False, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1905.02244")
def mobilenet_v3_large_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v3(MOBILENET_V3_LARGE_TABLE, 1280, True, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1905.02244")
def mobilenet_v3_small_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mobilenet_v3(MOBILENET_V3_SMALL_TABLE, 1024, True, num_classes, in_chans, width_mult, drop_rate)
