"""MobileNet V2 (Sandler et al., CVPR 2018, arXiv:1801.04381): inverted residuals with linear bottlenecks.

Matches torchvision ``mobilenet_v2`` exactly (3,504,872 parameters, ~300 M MACs at 224): the same layers in the
same order, so a torchvision state dict loads through :func:`lightnn.models.convert.load_foreign_state_dict`.
The :class:`InvertedResidual` block here is shared with MobileNet V3 and MnasNet (it takes an optional
squeeze-excite and any activation).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops import ConvBNAct, SqueezeExcite
from ..ops.conv import ActLike, call_flat
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2"]


class InvertedResidual(nn.Module):
    """1x1 expand -> KxK depthwise -> (squeeze-excite) -> 1x1 linear projection, residual when shapes allow.

    Paper Table 1: a bottleneck with expansion t maps k -> tk -> k' channels; the projection has no activation
    ("linear bottleneck", Sec. 3.2) because ReLU in a low-dimensional space destroys information. The expansion
    conv is skipped when ``exp_chs == in_chs`` (t = 1), as in torchvision.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, exp_chs: int, kernel_size: int = 3,
                 act: ActLike = "relu6", se_rd_chs: int = 0, se_gate: ActLike = "sigmoid",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise LightnnError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.use_res = stride == 1 and in_chs == out_chs
        # absent pieces are skipped by flags, not nn.Identity modules: each module call costs time in eager mode
        self.has_pw, self.has_se = exp_chs != in_chs, bool(se_rd_chs)
        self.conv_pw = ConvBNAct(in_chs, exp_chs, 1, act=act, **bn) if self.has_pw else nn.Identity()
        self.conv_dw = ConvBNAct(exp_chs, exp_chs, kernel_size, stride, groups=exp_chs, act=act, **bn)
        self.se = SqueezeExcite(exp_chs, se_rd_chs, act="relu", gate=se_gate) if self.has_se else nn.Identity()
        self.conv_pwl = ConvBNAct(exp_chs, out_chs, 1, act=None, **bn)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._modules  # a dict lookup instead of nn.Module.__getattr__ per child: eager batch-1 overhead
        y = call_flat(mods["conv_pw"], x) if self.has_pw else x
        y = call_flat(mods["conv_dw"], y)
        y = call_flat(mods["conv_pwl"], mods["se"](y) if self.has_se else y)
        return x + y if self.use_res else y


# Paper Table 2 (= torchvision inverted_residual_setting)
MOBILENET_V2_CFG: tuple[tuple[int, int, int, int], ...] = (
    # t, c, n, s   (expansion, output channels, repeats, stride of the first)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# CIFAR (32x32): stem at stride 1 and the 24-channel stage at stride 1, so 32 -> 4 at the last stage.
MOBILENET_V2_CIFAR_CFG: tuple[tuple[int, int, int, int], ...] = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(ClassifierModel):
    """Stem 3x3 conv -> inverted-residual stages from a (t, c, n, s) table -> 1x1 conv to 1280 -> pool -> FC."""

    def __init__(self, cfg: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_CFG, num_classes: int = 1000,
                 in_chans: int = 3, width_mult: float = 1.0, stem_chs: int = 32, stem_stride: int = 2,
                 last_chs: int = 1280, round_nearest: int = 8, drop_rate: float = 0.2, act: ActLike = "relu6",
                 block: type[nn.Module] = InvertedResidual) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"mobilenet_v2: width_mult must be > 0, got {width_mult}")
        in_c = make_divisible(stem_chs * width_mult, round_nearest)
        last = make_divisible(last_chs * max(1.0, width_mult), round_nearest)  # the head never shrinks
        layers: list[nn.Module] = [ConvBNAct(in_chans, in_c, 3, stem_stride, act=act)]
        for t, c, n, s in cfg:
            out_c = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(block(in_c, out_c, s if i == 0 else 1, exp_chs=int(round(in_c * t)), act=act))
                in_c = out_c
        layers.append(ConvBNAct(in_c, last, 1, act=act))
        self.features = nn.Sequential(*layers)
        self._init_head(last, num_classes, drop_rate)
        init_weights(self)


def _mobilenet_v2(cfg: tuple, stem_stride: int, num_classes: int, in_chans: int, width_mult: float,
                  drop_rate: float) -> MobileNetV2:
    return MobileNetV2(cfg, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult,
                       stem_stride=stem_stride, drop_rate=drop_rate)


@register_model(paper="arXiv:1801.04381")
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV2:
    return _mobilenet_v2(MOBILENET_V2_CFG, 2, num_classes, in_chans, width_mult, drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1801.04381")
def mobilenet_v2_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, drop_rate: float = 0.2) -> MobileNetV2:
    return _mobilenet_v2(MOBILENET_V2_CIFAR_CFG, 1, num_classes, in_chans, width_mult, drop_rate)
