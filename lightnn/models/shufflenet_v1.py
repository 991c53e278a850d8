"""ShuffleNet V1 (Zhang et al., CVPR 2018, arXiv:1707.01083).

The ShuffleNet unit (Fig. 2) replaces the dense 1x1 convs of a bottleneck with pointwise *group* convs and inserts
a channel shuffle after the first one, so that every group of the second group conv sees every group of the first:
``1x1 GConv(g) -> BN -> ReLU -> ChannelShuffle(g) -> 3x3 DWConv(stride) -> BN -> 1x1 GConv(g) -> BN``, added to
the identity (stride 1) or concatenated with a 3x3/s2 average pool of the input (stride 2), then ReLU. Unit cost
hw(2cm/g + 9m) for c channels and bottleneck m = c/4 (vs ResNet's hw(2cm + 9m^2)).

Table 1 fixes the stage widths per group number g so that ShuffleNet 1x costs about 140 M multiply-adds for every
g; "ShuffleNet s x" scales all widths by s (cost ~ s^2). The first pointwise conv of Stage 2 is not grouped (its
input has only 24 channels).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops.conv import ConvBNAct
from ..ops.shuffle import ChannelShuffle
from ._base import ClassifierModel, init_weights
from ._registry import register_model

__all__ = ["ShuffleUnitV1", "ShuffleNetV1", "SHUFFLENET_V1_WIDTHS", "SHUFFLENET_V1_REPEATS"]

# Table 1 (ShuffleNet 1x, 224x224): output channels of Stage 2, 3, 4 per number of groups g
SHUFFLENET_V1_WIDTHS: dict[int, tuple[int, int, int]] = {
    # g: (stage2, stage3, stage4)      complexity (MFLOPs = multiply-adds)
    1: (144, 288, 576),              # 143
    2: (200, 400, 800),              # 140
    3: (240, 480, 960),              # 137
    4: (272, 544, 1088),             # 133
    8: (384, 768, 1536),             # 137
}
SHUFFLENET_V1_REPEATS = (4, 8, 4)  # units per stage (the first one has stride 2)
# Conv1 width per width multiplier s: the official models (megvii-model/ShuffleNet-Series) keep 24 at 1.5x, which
# is what reproduces Table 5's 292 MFLOPs; 0.25x is not published: 12 (as at 0.5x) reproduces Table 2's 13 MFLOPs
# within 4% for g <= 4. Other s use 24 s. The stem is then rounded up to a multiple of g.
SHUFFLENET_V1_STEMS: dict[float, int] = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


class ShuffleUnitV1(nn.Module):
    """One ShuffleNet unit (Fig. 2b for stride 1, Fig. 2c for stride 2).

    ``out_chs`` is the unit's total output; with stride 2 the residual branch produces ``out_chs - in_chs``
    channels and is concatenated with the pooled input. The bottleneck has ``mid_chs`` (= out_chs / 4) channels.
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int, groups: int,
                 first_groups: int | None = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise LightnnError(f"ShuffleUnitV1: stride must be 1 or 2, got {stride}")
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        if stride == 1 and in_chs != out_chs:
            raise LightnnError(f"ShuffleUnitV1: a stride-1 unit adds its input, so in_chs={in_chs} must equal "
                               f"out_chs={out_chs}")
        if branch_chs < 1:
            raise LightnnError(f"ShuffleUnitV1: a stride-2 unit concatenates its input, so out_chs={out_chs} must "
                               f"exceed in_chs={in_chs}")
        g1 = groups if first_groups is None else first_groups
        for what, chs, g in (("input", in_chs, g1), ("bottleneck", mid_chs, g1), ("bottleneck", mid_chs, groups),
                             ("residual-branch output", branch_chs, groups)):
            if chs % g:
                raise LightnnError(f"ShuffleUnitV1: {what} channels {chs} (in={in_chs}, out={out_chs}, "
                                   f"bottleneck={mid_chs}) do not divide into groups={g}")
        self.in_chs, self.out_chs, self.stride, self.groups = in_chs, out_chs, stride, groups
        self.conv1 = ConvBNAct(in_chs, mid_chs, 1, groups=g1, act="relu")
        # the shuffle lets the next group conv mix information across the groups of conv1 (Sec. 3.1)
        self.shuffle = ChannelShuffle(g1) if g1 > 1 else nn.Identity()
        # no ReLU after the depthwise conv (Sec. 3.2, following Xception)
        self.dwconv = ConvBNAct(mid_chs, mid_chs, 3, stride, groups=mid_chs, act=None)
        self.conv2 = ConvBNAct(mid_chs, branch_chs, 1, groups=groups, act=None)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dwconv(self.shuffle(self.conv1(x))))
        if self.stride == 2:  # fixed at construction: traces to one branch
            return self.act(torch.cat([self.shortcut(x), y], dim=1))
        return self.act(x + y)


class ShuffleNetV1(ClassifierModel):
    """Conv1 (3x3/s2) -> MaxPool (3x3/s2) -> Stage 2..4 of ShuffleNet units -> global pool -> FC (Table 1).

    ``stage_chs`` gives explicit stage widths (e.g. a pruned or searched table); otherwise Table 1's widths for
    ``groups`` are scaled by ``width_mult`` and rounded half-up to a multiple of 4g (so the bottleneck, a quarter
    of the width, still divides into g groups; 0.5x g=4 gives 144/272/544 and Table 5's 38 MFLOPs), and the stem
    (``SHUFFLENET_V1_STEMS``) is rounded up to a multiple of g. Explicit widths that
    cannot be split into the groups raise :class:`LightnnError` naming the numbers.
    """

    def __init__(self, *, groups: int = 3, width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 stage_chs: tuple[int, ...] | None = None, stage_repeats: tuple[int, ...] = SHUFFLENET_V1_REPEATS,
                 stem_chs: int | None = None, stem_stride: int = 2, stem_pool: bool = True,
                 drop_rate: float = 0.0, img_size: int = 224) -> None:
        super().__init__()
        if groups not in SHUFFLENET_V1_WIDTHS and stage_chs is None:
            raise LightnnError(f"shufflenet_v1: groups must be one of {sorted(SHUFFLENET_V1_WIDTHS)} (Table 1), got "
                               f"{groups}; pass stage_chs= for other group numbers")
        if groups < 1:
            raise LightnnError(f"shufflenet_v1: groups must be >= 1, got {groups}")
        if width_mult <= 0:
            raise LightnnError(f"shufflenet_v1: width_mult must be > 0, got {width_mult}")
        if stage_chs is None:
            unit = 4 * groups
            stage_chs = tuple(max(unit, int(c * width_mult / unit + 0.5) * unit) for c in SHUFFLENET_V1_WIDTHS[groups])
        if stem_chs is None:
            stem = SHUFFLENET_V1_STEMS.get(float(width_mult), 24 * width_mult)
            stem_chs = max(groups, math.ceil(stem / groups - 1e-9) * groups)
        if len(stage_chs) != len(stage_repeats):
            raise LightnnError(f"shufflenet_v1: stage_chs {tuple(stage_chs)} and stage_repeats {tuple(stage_repeats)} "
                               f"must have the same length")
        if any(r < 1 for r in stage_repeats):
            raise LightnnError(f"shufflenet_v1: stage_repeats must all be >= 1, got {tuple(stage_repeats)}")
        for c in stage_chs:
            if c % 4:
                raise LightnnError(f"shufflenet_v1: stage width {c} must be divisible by 4 (bottleneck = width / 4)")
        self.groups, self.width_mult = groups, width_mult
        self.stage_chs, self.stem_chs = tuple(stage_chs), stem_chs
        self.default_input_size = (in_chans, img_size, img_size)

        layers: list[nn.Module] = [ConvBNAct(in_chans, stem_chs, 3, stem_stride, act="relu")]
        if stem_pool:
            layers.append(nn.MaxPool2d(3, 2, 1))
        prev = stem_chs
        for si, (out_chs, repeats) in enumerate(zip(stage_chs, stage_repeats)):
            stage = []
            for i in range(repeats):
                # Stage 2's first pointwise conv is dense: its input (the stem) is too narrow to group (Sec. 3.3)
                first_groups = 1 if (si == 0 and i == 0) else None
                stage.append(ShuffleUnitV1(prev, out_chs, out_chs // 4, 2 if i == 0 else 1, groups, first_groups))
                prev = out_chs
            layers.append(nn.Sequential(*stage))
        self.features = nn.Sequential(*layers)
        self._init_head(prev, num_classes, drop_rate)
        init_weights(self)


def _shufflenet_v1(*, cifar: bool = False, **kwargs) -> ShuffleNetV1:
    if cifar:  # 32x32 input: stride-1 stem, no max pool; the three stride-2 stages leave a 4x4 map
        kwargs.setdefault("stem_stride", 1)
        kwargs.setdefault("stem_pool", False)
        kwargs.setdefault("img_size", 32)
    return ShuffleNetV1(**kwargs)


@register_model(input_size=(3, 224, 224), paper="Zhang et al. 2018, arXiv:1707.01083, Table 1")
def shufflenet_v1(*, num_classes: int = 1000, in_chans: int = 3, groups: int = 3, width_mult: float = 1.0,
                  **kwargs) -> ShuffleNetV1:
    return _shufflenet_v1(num_classes=num_classes, in_chans=in_chans, groups=groups, width_mult=width_mult, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Zhang et al. 2018 with a stride-1 stem and no max pool for 32x32")
def shufflenet_v1_cifar(*, num_classes: int = 1000, in_chans: int = 3, groups: int = 3, width_mult: float = 1.0,
                        **kwargs) -> ShuffleNetV1:
    return _shufflenet_v1(num_classes=num_classes, in_chans=in_chans, groups=groups, width_mult=width_mult,
                          cifar=True, **kwargs)
