"""MobileNet V3 Large/Small (Howard et al., ICCV 2019, arXiv:1905.02244).

Inverted residuals with optional squeeze-excite (h-sigmoid gate) and h-swish in the deeper half, a 1x1 conv to
6x the last block width, then a pooled 1x1 "head" expansion (Linear -> h-swish) before the classifier (paper
Sec. 5.3 "efficient last stage"). Matches torchvision ``mobilenet_v3_large`` / ``mobilenet_v3_small`` exactly
(5,483,032 / 2,542,856 parameters), including BatchNorm eps=1e-3, momentum=0.01.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops import ConvBNAct, HSwish
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model
from .mobilenet_v2 import InvertedResidual

__all__ = ["MobileNetV3"]

Row = tuple[int, int, int, int, bool, str, int]

# Paper Table 1 (= torchvision _mobilenet_v3_conf("mobilenet_v3_large"))
MOBILENET_V3_LARGE_CFG: tuple[Row, ...] = (
    # in, k, exp, out, se, act, s
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hswish", 2),
    (80, 3, 200, 80, False, "hswish", 1),
    (80, 3, 184, 80, False, "hswish", 1),
    (80, 3, 184, 80, False, "hswish", 1),
    (80, 3, 480, 112, True, "hswish", 1),
    (112, 3, 672, 112, True, "hswish", 1),
    (112, 5, 672, 160, True, "hswish", 2),
    (160, 5, 960, 160, True, "hswish", 1),
    (160, 5, 960, 160, True, "hswish", 1),
)

# Paper Table 2 (= torchvision _mobilenet_v3_conf("mobilenet_v3_small"))
MOBILENET_V3_SMALL_CFG: tuple[Row, ...] = (
    # in, k, exp, out, se, act, s
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hswish", 2),
    (40, 5, 240, 40, True, "hswish", 1),
    (40, 5, 240, 40, True, "hswish", 1),
    (40, 5, 120, 48, True, "hswish", 1),
    (48, 5, 144, 48, True, "hswish", 1),
    (48, 5, 288, 96, True, "hswish", 2),
    (96, 5, 576, 96, True, "hswish", 1),
    (96, 5, 576, 96, True, "hswish", 1),
)


def cifar_cfg(cfg: tuple[Row, ...]) -> tuple[Row, ...]:
    """The same table with its first stride-2 row at stride 1 (with a stride-1 stem: 32x32 -> 4x4)."""
    first = next(i for i, row in enumerate(cfg) if row[-1] == 2)
    return tuple(row[:-1] + (1,) if i == first else row for i, row in enumerate(cfg))


class MobileNetV3(ClassifierModel):
    """Stem (3x3 s2, 16, h-swish) -> bneck table -> 1x1 conv to 6x -> pool -> Linear -> h-swish -> dropout -> FC.

    ``num_features`` is the width of the last feature map (960 Large / 576 Small); ``forward_head(pre_logits=True)``
    returns that pooled vector, before the head expansion.
    """

    def __init__(self, cfg: tuple[Row, ...], last_chs: int, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, stem_stride: int = 2, drop_rate: float = 0.2, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, block: type[nn.Module] = InvertedResidual) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"mobilenet_v3: width_mult must be > 0, got {width_mult}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)

        def adjust(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        layers: list[nn.Module] = [ConvBNAct(in_chans, adjust(cfg[0][0]), 3, stem_stride, act="hswish", **bn)]
        for in_c, k, exp, out, se, act, s in cfg:
            exp_c = adjust(exp)
            layers.append(block(adjust(in_c), adjust(out), s, exp_c, k, act=act,
                                se_rd_chs=make_divisible(exp_c // 4, 8) if se else 0, se_gate="hsigmoid", **bn))
        last_in = adjust(cfg[-1][3])
        self.features = nn.Sequential(*layers, ConvBNAct(last_in, 6 * last_in, 1, act="hswish", **bn))
        self.num_features = 6 * last_in
        self.head_chs = adjust(last_chs)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_fc = nn.Linear(self.num_features, self.head_chs)  # torchvision classifier[0]
        self.head_act = HSwish()
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(self.head_chs, num_classes)  # torchvision classifier[3]
        init_weights(self)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(self.head_act(self.head_fc(x))))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.head_chs, num_classes) if num_classes > 0 else nn.Identity()


def _mobilenet_v3(cfg: tuple[Row, ...], last_chs: int, stem_stride: int, num_classes: int, in_chans: int,
                  width_mult: float, drop_rate: float) -> MobileNetV3:
    return MobileNetV3(cfg, last_chs, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult,
                       stem_stride=stem_stride, drop_rate=drop_rate)


@register_model(paper="arXiv:1905.02244")
def mobilenet_v3_large(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV3:
    return _mobilenet_v3(MOBILENET_V3_LARGE_CFG, 1280, 2, num_classes, in_chans, width_mult, drop_rate)


@register_model(paper="arXiv:1905.02244")
def mobilenet_v3_small(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV3:
    return _mobilenet_v3(MOBILENET_V3_SMALL_CFG, 1024, 2, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1905.02244")
def mobilenet_v3_large_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV3:
    return _mobilenet_v3(cifar_cfg(MOBILENET_V3_LARGE_CFG), 1280, 1, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1905.02244")
def mobilenet_v3_small_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV3:
    return _mobilenet_v3(cifar_cfg(MOBILENET_V3_SMALL_CFG), 1024, 1, num_classes, in_chans, width_mult, drop_rate)
