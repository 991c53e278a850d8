"""MnasNet (Tan et al., CVPR 2019, arXiv:1807.11626): platform-aware NAS result built from inverted residuals.

Two searched architectures share one class and differ only in their tables:

- ``mnasnet0_5 / 0_75 / 1_0 / 1_3`` (and ``mnasnet_b1`` at any ``width_mult``): torchvision's MNASNet (the B1
  variant, no squeeze-excite), matched exactly
  (2,218,512 / 3,170,208 / 4,383,312 / 6,282,256 parameters; BatchNorm momentum 1 - 0.9997 as in TF).
- ``mnasnet_a1``: the paper's headline model (Fig. 7) with squeeze-excite (ratio 0.25 of the block input width,
  as in the official TPU code) in the 40/112/160-channel stages: 3.9 M parameters, 312 M multiply-adds.

Both start with a 3x3 stride-2 conv and a depthwise-separable 32 -> 16 layer without skip, and end with a
1x1 conv to 1280 (never scaled by the width multiplier, as in torchvision).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from ..errors import LightnnError
from ..ops import ConvBNAct
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model
from .mobilenet_v2 import InvertedResidual

__all__ = ["MNASNet"]

BN_MOMENTUM = 1 - 0.9997  # TF's 0.9997 decay, as in torchvision

Row = tuple[int, int, int, int, int, float]

# torchvision mnasnet (_stack calls); = MnasNet-B1
MNASNET_B1_CFG: tuple[Row, ...] = (
    # e, c, n, s, k, se
    (3, 24, 3, 2, 3, 0.0),
    (3, 40, 3, 2, 5, 0.0),
    (6, 80, 3, 2, 5, 0.0),
    (6, 96, 2, 1, 3, 0.0),
    (6, 192, 4, 2, 5, 0.0),
    (6, 320, 1, 1, 3, 0.0),
)

# Paper Fig. 7 (MnasNet-A1)
MNASNET_A1_CFG: tuple[Row, ...] = (
    # e, c, n, s, k, se
    (6, 24, 2, 2, 3, 0.0),
    (3, 40, 3, 2, 5, 0.25),
    (6, 80, 4, 2, 3, 0.0),
    (6, 112, 2, 1, 3, 0.25),
    (6, 160, 3, 2, 5, 0.25),
    (6, 320, 1, 1, 3, 0.0),
)


def cifar_cfg(cfg: tuple[Row, ...]) -> tuple[Row, ...]:
    """The same table with the first stage at stride 1 (with a stride-1 stem: 32x32 -> 4x4)."""
    e, c, n, _, k, se = cfg[0]
    return ((e, c, n, 1, k, se),) + tuple(cfg[1:])


class MNASNet(ClassifierModel):
    """Stem conv -> depthwise-separable (no skip) -> inverted-residual stages from an (e, c, n, s, k, se) table
    -> 1x1 conv to 1280 -> pool -> dropout -> FC."""

    def __init__(self, cfg: tuple[Row, ...] = MNASNET_B1_CFG, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, stem_chs: int = 32, sep_chs: int = 16, last_chs: int = 1280,
                 stem_stride: int = 2, drop_rate: float = 0.2, bn_momentum: float = BN_MOMENTUM,
                 block: type[nn.Module] = InvertedResidual) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"mnasnet: width_mult must be > 0, got {width_mult}")
        bn = dict(bn_momentum=bn_momentum)
        stem = make_divisible(stem_chs * width_mult, 8)
        in_c = make_divisible(sep_chs * width_mult, 8)
        layers: list[nn.Module] = [
            ConvBNAct(in_chans, stem, 3, stem_stride, **bn),
            nn.Sequential(OrderedDict(
                dw=ConvBNAct(stem, stem, 3, 1, groups=stem, **bn),
                pw=ConvBNAct(stem, in_c, 1, act=None, **bn),
            )),
        ]
        for e, c, n, s, k, se in cfg:
            out_c = make_divisible(c * width_mult, 8)
            stage = []
            for i in range(n):
                # squeeze-excite width from the block input, as in the official MnasNet code
                rd = max(1, int(in_c * se)) if se else 0
                stage.append(block(in_c, out_c, s if i == 0 else 1, in_c * e, k, act="relu", se_rd_chs=rd, **bn))
                in_c = out_c
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(in_c, last_chs, 1, **bn))
        self.features = nn.Sequential(*layers)
        self._init_head(last_chs, num_classes, drop_rate)
        init_weights(self)


def _mnasnet(cfg: tuple[Row, ...], width_mult: float, num_classes: int, in_chans: int, drop_rate: float,
             stem_stride: int = 2) -> MNASNet:
    return MNASNet(cfg, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult,
                   stem_stride=stem_stride, drop_rate=drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet0_5(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(MNASNET_B1_CFG, 0.5, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet0_75(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(MNASNET_B1_CFG, 0.75, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet1_0(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(MNASNET_B1_CFG, 1.0, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet1_3(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(MNASNET_B1_CFG, 1.3, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet_a1(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(MNASNET_A1_CFG, width_mult, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet_b1(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MNASNet:
    """MnasNet-B1 (no squeeze-excite) at any width; ``width_mult=1.0`` is torchvision's ``mnasnet1_0``."""
    return _mnasnet(MNASNET_B1_CFG, width_mult, num_classes, in_chans, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1807.11626")
def mnasnet_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(cifar_cfg(MNASNET_B1_CFG), width_mult, num_classes, in_chans, drop_rate, stem_stride=1)


@register_model(input_size=(3, 32, 32), paper="arXiv:1807.11626")
def mnasnet_a1_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MNASNet:
    return _mnasnet(cifar_cfg(MNASNET_A1_CFG), width_mult, num_classes, in_chans, drop_rate, stem_stride=1)
