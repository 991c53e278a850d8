"""MnasNet (Tan et al., CVPR 2019, arXiv:1807.11626): platform-aware NAS results as tables of inverted residuals.

Two searched architectures, fed to :class:`~lightnn.models.ir_net.IRNet`, differ only in their tables:

- ``mnasnet0_5 / 0_75 / 1_0 / 1_3`` (and ``mnasnet_b1`` at any ``width_mult``): torchvision's MNASNet (the B1
  variant, no squeeze-excite), matched exactly
  (2,218,512 / 3,170,208 / 4,383,312 / 6,282,256 parameters; BatchNorm momentum 1 - 0.9997 as in TF).
- ``mnasnet_a1``: the paper's headline model (Fig. 7) with squeeze-excite (ratio 0.25 of the block input width,
  as in the official TPU code) in the 40/112/160-channel stages: 3.9 M parameters, 312 M multiply-adds.

Both start with a 3x3 stride-2 conv and a depthwise-separable 32 -> 16 layer without skip, and end with a
1x1 conv to 1280 (never scaled by the width multiplier, as in torchvision). Each table row is one
``nn.Sequential`` stage (``features.2`` ... ``features.7``).
"""

from __future__ import annotations

from ._registry import register_model
from .ir_net import IRNet, IRStage, cifar_table

__all__ = ["MNASNET_STEM", "MNASNET_B1_TABLE", "MNASNET_A1_TABLE", "BN_MOMENTUM"]

BN_MOMENTUM = 1 - 0.9997  # TF's 0.9997 decay, as in torchvision

MNASNET_STEM: tuple[IRStage, ...] = (
    IRStage(1, 32, 1, 2, op="conv", skip=False),  # 3x3 conv, stride 2
    IRStage(1, 16, 1, 1, op="ds", skip=False),  # depthwise-separable 3x3, no skip
)

# torchvision mnasnet (_stack calls); = MnasNet-B1
MNASNET_B1_TABLE: tuple[IRStage, ...] = (
    # t, c, n, s, k
    IRStage(3, 24, 3, 2, 3),
    IRStage(3, 40, 3, 2, 5),
    IRStage(6, 80, 3, 2, 5),
    IRStage(6, 96, 2, 1, 3),
    IRStage(6, 192, 4, 2, 5),
    IRStage(6, 320, 1, 1, 3),
)

# Paper Fig. 7 (MnasNet-A1)
MNASNET_A1_TABLE: tuple[IRStage, ...] = (
    # t, c, n, s, k, se
    IRStage(6, 24, 2, 2, 3),
    IRStage(3, 40, 3, 2, 5, 0.25),
    IRStage(6, 80, 4, 2, 3),
    IRStage(6, 112, 2, 1, 3, 0.25),
    IRStage(6, 160, 3, 2, 5, 0.25),
    IRStage(6, 320, 1, 1, 3),
)


def _mnasnet(table: tuple[IRStage, ...], width_mult: float, num_classes: int, in_chans: int, drop_rate: float,
             cifar: bool = False) -> IRNet:
    stem = MNASNET_STEM
    if cifar:  # 32x32: the stem conv and the first stage at stride 1 (32 -> 4)
        stem, table = cifar_table(stem), cifar_table(table)
    # squeeze-excite width from the block input, as in the official MnasNet code
    return IRNet(table, stem=stem, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, act="relu",
                 head_chs=1280, drop_rate=drop_rate, se_from="in", se_round_to=1, bn_momentum=BN_MOMENTUM,
                 nest_stages=True)


@register_model(paper="arXiv:1807.11626")
def mnasnet0_5(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_B1_TABLE, 0.5, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet0_75(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_B1_TABLE, 0.75, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet1_0(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_B1_TABLE, 1.0, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet1_3(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_B1_TABLE, 1.3, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet_a1(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_A1_TABLE, width_mult, num_classes, in_chans, drop_rate)


@register_model(paper="arXiv:1807.11626")
def mnasnet_b1(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    """MnasNet-B1 (no squeeze-excite) at any width; ``width_mult=1.0`` is torchvision's ``mnasnet1_0``."""
    return _mnasnet(MNASNET_B1_TABLE, width_mult, num_classes, in_chans, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1807.11626")
def mnasnet_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_B1_TABLE, width_mult, num_classes, in_chans, drop_rate, cifar=True)


@register_model(input_size=(3, 32, 32), paper="arXiv:1807.11626")
def mnasnet_a1_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> IRNet:
    return _mnasnet(MNASNET_A1_TABLE, width_mult, num_classes, in_chans, drop_rate, cifar=True)
