"""Interleaved group convolution networks: IGCV1 (ResNet-style IGC-LxMy), IGCV2 and IGCV3-D.

- IGCV1 (Zhang et al., ICCV 2017, arXiv:1707.02725), following the official MXNet code
  (hellozting/InterleavedGroupConvolutions): CIFAR ``resnet_igc`` (3x3 stem to width L M, three stages of width
  C, 2C, 4C, depth 6n+2, each residual block two IGC blocks, 1x1 group-conv projection shortcuts) and the ImageNet
  ResNet-18-like ``resnet_igc_imgnet_d18`` (7x7 stem, four stages of two blocks; width doubled per stage by doubling
  M at fixed L, or by doubling L at fixed M for IGC-L100M2).
- IGCV2 (Xie et al., CVPR 2018, arXiv:1804.06202): depthwise + interleaved group 1x1 chains in place of the
  depthwise-separable units of MobileNet V1 (ImageNet layout) and a ResNet-style CIFAR net. The paper's exact
  networks could not be checked against the paper's text, so these are lightnn's layouts, not paper numbers.
- IGCV3-D (Sun et al., BMVC 2018, arXiv:1806.00178), the official ``symbols/igcv3.py``: MobileNetV2 widths with
  about twice the blocks per stage (t, c, n, s table below) and IGCV3 inverted residuals (G1 = G2 = 2).

Counts (tested in tests/ops/test_igc.py): IGCV3-D 1.0 has 3.49 M params and 313 M MACs at 224 (paper 3.5 M, 318 M).
The widths 0.7 / 1.4 give 175 M / 590 M MACs against the 210 M / 610 M that ShuffleNet V2 quotes. The official
code scales the declared input of each stage's first block twice for width != 1 (``in_c = round(c * multiplier)``
after ``c`` was already scaled), so that block's expansion is sized from the wrong width; we do not copy that. With
it the network would have 168 M MACs at 0.7 and 621 M at 1.4 (checked by building it), so the quoted 210 M cannot
come from the official code either. IGC-L100M2 has 8.64 M params (README 8.61 M, MACs 1.26 G vs 1.3 G); the README's
11.205 M / 11.329 M for IGC-L4M32 / L16M16 equal our 11.20 M / 11.44 M without the 1000-way classifier (with it
12.23 M / 13.49 M; MACs 1.78 G / 1.98 G vs 1.9 G / 2.2 G), so those two rows seem to leave the FC out.
The IGCV3 CIFAR README's 2.4 M for IGCV3-D 1.0 compares with 2.22 M here (10 classes).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops.conv import ConvBNAct
from ..ops.igc import IGCV1Block, IGCV2Block, IGCV3Block, igcv2_branch_sizes
from ._base import ClassifierModel, init_weights, make_divisible
from ._registry import register_model

# ImageNet layouts downsample by 32; a 32x32 test input still leaves a 1x1 map and keeps the contract tests fast.
_TEST_SIZE = (3, 32, 32)

__all__ = ["IGCV1ResNet", "IGCV2Net", "IGCV3Net", "IGCV3_D_CFG", "IGCV2_MOBILE_CFG"]


# ---------------------------------------------------------------------------------------------------------------
# IGCV1
# ---------------------------------------------------------------------------------------------------------------

class IGCResidual(nn.Module):
    """Two IGCV1 blocks (the second without ReLU) + shortcut, then ReLU (official ``get_fusion``).

    The shortcut is the identity, or a 1x1 group conv (``proj_groups`` groups) + BN when the width or stride
    changes. ``secondary`` is the first block's number of secondary partitions (the official CIFAR code uses
    kin / L there, so a widening block's secondary partitions hold 2 channels per primary partition).
    """

    def __init__(self, in_chs: int, out_chs: int, L: int, stride: int, secondary: int, proj_groups: int) -> None:
        super().__init__()
        self.igc1 = IGCV1Block(in_chs, out_chs, L, secondary, 3, stride)
        self.igc2 = IGCV1Block(out_chs, out_chs, L, out_chs // L, 3, 1, act=None)
        if in_chs != out_chs or stride != 1:
            self.shortcut = ConvBNAct(in_chs, out_chs, 1, stride, groups=proj_groups, act=None)
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.igc2(self.igc1(x)))


class IGCV1ResNet(ClassifierModel):
    """A ResNet whose 3x3 convs are IGCV1 blocks.

    ``stages``: one row per stage, ``(out_chs, num_blocks, stride, L, secondary_first, proj_groups)``.
    """

    def __init__(self, stages: Sequence[tuple[int, int, int, int, int, int]], *, stem_chs: int, num_classes: int,
                 in_chans: int, imagenet_stem: bool, drop_rate: float = 0.0) -> None:
        super().__init__()
        if imagenet_stem:
            stem: list[nn.Module] = [ConvBNAct(in_chans, stem_chs, 7, 2),
                                     nn.MaxPool2d(3, 2, 1)]
            self.default_input_size = (in_chans, 224, 224)
        else:
            stem = [ConvBNAct(in_chans, stem_chs, 3, 1)]
            self.default_input_size = (in_chans, 32, 32)
        layers = list(stem)
        prev = stem_chs
        for out_chs, n, stride, L, secondary, proj_groups in stages:
            for i in range(n):
                layers.append(IGCResidual(prev, out_chs, L, stride if i == 0 else 1,
                                          secondary if i == 0 else out_chs // L, proj_groups))
                prev = out_chs
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


def _igcv1_cifar(L: int, M: int, depth: int, num_classes: int, in_chans: int, **kwargs) -> IGCV1ResNet:
    """Official CIFAR ``resnet_igc``: widths C, C, 2C, 4C (C = L M), (depth - 2) / 6 blocks per stage."""
    if depth < 8 or (depth - 2) % 6:
        raise LightnnError(f"igcv1 CIFAR nets need depth = 6n + 2 (8, 14, 20, ...), got {depth}")
    n = (depth - 2) // 6
    c = L * M
    stages = [(c * 2 ** s, n, 1 if s == 0 else 2, L, (c * 2 ** max(s - 1, 0)) // L, L) for s in range(3)]
    return IGCV1ResNet(stages, stem_chs=c, num_classes=num_classes, in_chans=in_chans, imagenet_stem=False,
                       **kwargs)


def _igcv1_imagenet(L: int, M: int, vary_L: bool, num_classes: int, in_chans: int, **kwargs) -> IGCV1ResNet:
    """Official ``resnet_igc_imgnet_d18``: 7x7 stem to C/2 (C = L M), stages C, 2C, 4C, 8C of two blocks; the width
    doubles by doubling M (or L when ``vary_L``); projection shortcuts are 1x1 group convs with L groups."""
    c = L * M
    stages = []
    for s in range(4):
        Ls = L * 2 ** s if vary_L else L
        out = c * 2 ** s
        stages.append((out, 2, 1 if s == 0 else 2, Ls, out // Ls, Ls))
    return IGCV1ResNet(stages, stem_chs=c // 2, num_classes=num_classes, in_chans=in_chans, imagenet_stem=True,
                       **kwargs)


@register_model(input_size=(3, 32, 32), paper="Zhang et al. ICCV 2017, IGC-L4M8+Ident. (CIFAR, official code)")
def igcv1_cifar_l4m8(*, num_classes: int = 1000, in_chans: int = 3, depth: int = 20, **kwargs) -> IGCV1ResNet:
    return _igcv1_cifar(4, 8, depth, num_classes, in_chans, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Zhang et al. ICCV 2017, IGC-L24M2+Ident. (CIFAR, official code)")
def igcv1_cifar_l24m2(*, num_classes: int = 1000, in_chans: int = 3, depth: int = 20, **kwargs) -> IGCV1ResNet:
    return _igcv1_cifar(24, 2, depth, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Zhang et al. ICCV 2017, IGC-L4M32+Ident. (ImageNet, 11.205 M params without the FC)")
def igcv1_l4m32(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV1ResNet:
    return _igcv1_imagenet(4, 32, False, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Zhang et al. ICCV 2017, IGC-L16M16+Ident. (ImageNet, 11.329 M params without the FC)")
def igcv1_l16m16(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV1ResNet:
    return _igcv1_imagenet(16, 16, False, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Zhang et al. ICCV 2017, IGC-L100M2+Ident. (ImageNet, 8.61 M params)")
def igcv1_l100m2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV1ResNet:
    return _igcv1_imagenet(100, 2, True, num_classes, in_chans, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# IGCV2
# ---------------------------------------------------------------------------------------------------------------

# MobileNet V1 body (Table 1) with each depthwise-separable unit replaced by an IGCV2 block.
IGCV2_MOBILE_CFG: tuple[tuple[int, int], ...] = (
    # out_chs, stride
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class IGCV2Residual(nn.Module):
    """An IGCV2 block with a shortcut (identity, or 1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, L: int) -> None:
        super().__init__()
        self.block = IGCV2Block(in_chs, out_chs, branch_sizes=igcv2_branch_sizes(in_chs, L), stride=stride,
                                act=None)
        self.shortcut = (nn.Identity() if in_chs == out_chs and stride == 1
                         else ConvBNAct(in_chs, out_chs, 1, stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.block(x))


class IGCV2Net(ClassifierModel):
    """Stem conv -> IGCV2 blocks (``cfg`` rows ``(out_chs, stride)``) -> pool -> FC.

    ``L`` is the number of convs per IGCV2 block (1 depthwise + L-1 group 1x1 convs, branch sizes from the
    balance condition); ``residual`` adds shortcuts (the CIFAR layout).
    """

    def __init__(self, cfg: Sequence[tuple[int, int]], *, num_classes: int, in_chans: int, width_mult: float = 1.0,
                 L: int = 3, stem_chs: int = 32, stem_stride: int = 2, residual: bool = False,
                 img_size: int = 224, drop_rate: float = 0.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"igcv2: width_mult must be > 0, got {width_mult}")
        self.default_input_size = (in_chans, img_size, img_size)
        prev = make_divisible(stem_chs * width_mult, 8)
        layers: list[nn.Module] = [ConvBNAct(in_chans, prev, 3, stem_stride)]
        for out_chs, stride in cfg:
            out = make_divisible(out_chs * width_mult, 8)
            if residual:
                layers.append(IGCV2Residual(prev, out, stride, L))
            else:
                layers.append(IGCV2Block(prev, out, branch_sizes=igcv2_branch_sizes(prev, L), stride=stride))
            prev = out
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


@register_model(test_input_size=_TEST_SIZE,
                paper="Xie et al. CVPR 2018 (IGCV2 blocks in the MobileNet V1 layout; lightnn's layout)")
def igcv2_1_0(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, L: int = 3,
              **kwargs) -> IGCV2Net:
    return IGCV2Net(IGCV2_MOBILE_CFG, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, L=L,
                    **kwargs)


@register_model(test_input_size=_TEST_SIZE, paper="Xie et al. CVPR 2018 (IGCV2 at width 0.5; lightnn's layout)")
def igcv2_0_5(*, num_classes: int = 1000, in_chans: int = 3, L: int = 3, **kwargs) -> IGCV2Net:
    return IGCV2Net(IGCV2_MOBILE_CFG, num_classes=num_classes, in_chans=in_chans, width_mult=0.5, L=L, **kwargs)


@register_model(test_input_size=_TEST_SIZE, paper="Xie et al. CVPR 2018 (IGCV2 at width 0.25; lightnn's layout)")
def igcv2_0_25(*, num_classes: int = 1000, in_chans: int = 3, L: int = 3, **kwargs) -> IGCV2Net:
    return IGCV2Net(IGCV2_MOBILE_CFG, num_classes=num_classes, in_chans=in_chans, width_mult=0.25, L=L, **kwargs)


@register_model(input_size=(3, 32, 32),
                paper="Xie et al. CVPR 2018 (ResNet-style CIFAR IGCV2 net; lightnn's layout)")
def igcv2_cifar(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64, blocks: int = 3, L: int = 3,
                **kwargs) -> IGCV2Net:
    if blocks < 1:
        raise LightnnError(f"igcv2_cifar: blocks per stage must be >= 1, got {blocks}")
    cfg = [(width * 2 ** s, 2 if (s > 0 and i == 0) else 1) for s in range(3) for i in range(blocks)]
    return IGCV2Net(cfg, num_classes=num_classes, in_chans=in_chans, L=L, stem_chs=width, stem_stride=1,
                    residual=True, img_size=32, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# IGCV3
# ---------------------------------------------------------------------------------------------------------------

# IGCV3-D (official symbols/igcv3.py): MobileNetV2's widths with deeper stages.
IGCV3_D_CFG: tuple[tuple[int, int, int, int], ...] = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 4, 2),
    (6, 32, 6, 2),
    (6, 64, 8, 2),
    (6, 96, 6, 1),
    (6, 160, 6, 2),
    (6, 320, 1, 1),
)


class IGCV3Net(ClassifierModel):
    """Stem 3x3 conv -> IGCV3 inverted residuals (``cfg`` rows t, c, n, s) -> 1x1 conv -> pool -> FC.

    Channels follow the official code: ``round(c * width_mult)`` made even (the group convs need G = 2); the last
    conv has 1280 channels, scaled only when width_mult > 1.
    """

    def __init__(self, cfg: Sequence[tuple[int, int, int, int]] = IGCV3_D_CFG, *, num_classes: int,
                 in_chans: int, width_mult: float = 1.0, stem_stride: int = 2, first_stage_stride: int | None = None,
                 groups1: int = 2, groups2: int = 2, last_chs: int = 1280, divisor: int = 2, img_size: int = 224,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"igcv3: width_mult must be > 0, got {width_mult}")
        self.width_mult = width_mult
        self.default_input_size = (in_chans, img_size, img_size)

        def chs(c: float) -> int:
            if divisor == 2:  # official rounding
                v = int(round(c * width_mult))
                return v + (v % 2)
            return make_divisible(c * width_mult, divisor)

        prev = chs(32)
        layers: list[nn.Module] = [ConvBNAct(in_chans, prev, 3, stem_stride, act="relu6")]
        for idx, (t, c, n, s) in enumerate(cfg):
            out = chs(c)
            if idx == 1 and first_stage_stride is not None:
                s = first_stage_stride
            for i in range(n):
                layers.append(IGCV3Block(prev, out, s if i == 0 else 1, t, groups1, groups2))
                prev = out
        last = int(last_chs * width_mult) if width_mult > 1.0 else last_chs
        layers.append(ConvBNAct(prev, last, 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self._init_head(last, num_classes, drop_rate)
        init_weights(self)


def _igcv3(width_mult: float, num_classes: int, in_chans: int, **kwargs) -> IGCV3Net:
    return IGCV3Net(IGCV3_D_CFG, num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register_model(test_input_size=_TEST_SIZE, paper="Sun et al. BMVC 2018, IGCV3-D 0.5x (official code)")
def igcv3_050(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV3Net:
    return _igcv3(0.5, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Sun et al. BMVC 2018, IGCV3-D 0.7x (ShuffleNet V2 Table 8 quotes 210 M MACs; ours 175 M)")
def igcv3_070(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV3Net:
    return _igcv3(0.7, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Sun et al. BMVC 2018, IGCV3-D 1.0x (3.5 M params; 318 M MACs per ShuffleNet V2 Table 8)")
def igcv3_100(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV3Net:
    return _igcv3(1.0, num_classes, in_chans, **kwargs)


@register_model(test_input_size=_TEST_SIZE,
                paper="Sun et al. BMVC 2018, IGCV3-D 1.4x (ShuffleNet V2 Table 8 quotes 610 M MACs; ours 590 M)")
def igcv3_140(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> IGCV3Net:
    return _igcv3(1.4, num_classes, in_chans, **kwargs)


@register_model(input_size=(3, 32, 32),
                paper="Sun et al. BMVC 2018, IGCV3-D for CIFAR (stride-1 stem and stage 2)")
def igcv3_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, **kwargs) -> IGCV3Net:
    kwargs.setdefault("stem_stride", 1)
    kwargs.setdefault("first_stage_stride", 1)
    kwargs.setdefault("img_size", 32)
    return _igcv3(width_mult, num_classes, in_chans, **kwargs)
