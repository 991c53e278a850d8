"""ShuffleNet V2 (Ma et al., ECCV 2018, arXiv:1807.11164) at 0.5x / 1x / 1.5x / 2x.

Unit (paper Fig. 3c/d): a channel split sends half the channels through untouched and half through
1x1 -> 3x3 depthwise -> 1x1 (guidelines G1-G4: equal widths, no group 1x1, few branches, no element-wise add);
the halves are concatenated and channel-shuffled. The downsampling unit feeds all channels to both branches.
Matches torchvision ``shufflenet_v2_x*`` exactly (1,366,792 / 2,278,604 / 3,503,624 / 7,393,996 parameters);
split and shuffle are explicit modules (:class:`ChannelSplit`, :class:`ChannelShuffle`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops import ChannelShuffle, ChannelSplit, ConvBNAct
from ..ops.conv import ActLike, call_flat
from ._base import ClassifierModel, init_weights
from ._registry import register_model

__all__ = ["ShuffleV2Block", "ShuffleNetV2"]


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 unit; stride 1 keeps ``in_chs == out_chs``, stride 2 doubles the width by concatenation."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: ActLike = "relu") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise LightnnError(f"ShuffleV2Block: stride must be 1 or 2, got {stride}")
        if out_chs % 2:
            raise LightnnError(f"ShuffleV2Block: out_chs={out_chs} must be even (two equal branches)")
        branch = out_chs // 2
        if stride == 1 and in_chs != out_chs:
            raise LightnnError(f"ShuffleV2Block: a stride-1 unit needs in_chs == out_chs, got {in_chs} -> {out_chs}")
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(OrderedDict(
                dw=ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act=None),
                pw=ConvBNAct(in_chs, branch, 1, act=act),
            ))
        else:
            self.split = ChannelSplit(branch)
        self.branch2 = nn.Sequential(OrderedDict(
            pw1=ConvBNAct(in_chs if stride == 2 else branch, branch, 1, act=act),
            dw=ConvBNAct(branch, branch, 3, stride, groups=branch, act=None),
            pw2=ConvBNAct(branch, branch, 1, act=act),
        ))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Children from the _modules dict: ``self.<child>`` goes through nn.Module.__getattr__ (~1 us each), a
        # visible share of a unit's time at batch 1. Still looked up per call, so a replaced child is used. The
        # branches' containers are run by call_flat (their layers called directly) for the same reason.
        m = self._modules
        if self.stride == 1:
            x1, x2 = m["split"](x)
            out = torch.cat((x1, call_flat(m["branch2"], x2)), 1)
        else:
            out = torch.cat((call_flat(m["branch1"], x), call_flat(m["branch2"], x)), 1)
        return m["shuffle"](out)


# Paper Table 5: output channels per width (stem 24 and the repeats 4/8/4 are shared)
SHUFFLENET_V2_CHANNELS: dict[float, tuple[int, int, int, int]] = {
    # width: stage2, stage3, stage4, conv5
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
SHUFFLENET_V2_REPEATS = (4, 8, 4)


class ShuffleNetV2(ClassifierModel):
    """conv1 (3x3 s2, 24) -> maxpool -> stages 2-4 (first unit stride 2) -> conv5 (1x1) -> pool -> FC."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3, stem_chs: int = 24,
                 small_input: bool = False, repeats: tuple[int, ...] = SHUFFLENET_V2_REPEATS,
                 block: type[nn.Module] = ShuffleV2Block) -> None:
        super().__init__()
        if width_mult not in SHUFFLENET_V2_CHANNELS:
            raise LightnnError(f"shufflenet_v2: width_mult must be one of {sorted(SHUFFLENET_V2_CHANNELS)}, got {width_mult}")
        *stage_chs, last = SHUFFLENET_V2_CHANNELS[width_mult]
        # CIFAR: stride-1 stem and no max-pool, so the three stages take 32 -> 16 -> 8 -> 4.
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=ConvBNAct(in_chans, stem_chs, 3, 1 if small_input else 2),
            maxpool=nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1),
        )
        in_c = stem_chs
        for i, (n, c) in enumerate(zip(repeats, stage_chs)):
            layers[f"stage{i + 2}"] = nn.Sequential(*[block(in_c if j == 0 else c, c, 2 if j == 0 else 1) for j in range(n)])
            in_c = c
        layers["conv5"] = ConvBNAct(in_c, last, 1)
        self.features = nn.Sequential(layers)
        self.width_mult = width_mult
        self._init_head(last, num_classes)
        init_weights(self)


def _shufflenet_v2(width_mult: float, num_classes: int, in_chans: int, small_input: bool = False) -> ShuffleNetV2:
    return ShuffleNetV2(width_mult, num_classes=num_classes, in_chans=in_chans, small_input=small_input)


@register_model(paper="arXiv:1807.11164")
def shufflenet_v2_x0_5(*, num_classes: int = 1000, in_chans: int = 3) -> ShuffleNetV2:
    return _shufflenet_v2(0.5, num_classes, in_chans)


@register_model(paper="arXiv:1807.11164")
def shufflenet_v2_x1_0(*, num_classes: int = 1000, in_chans: int = 3) -> ShuffleNetV2:
    return _shufflenet_v2(1.0, num_classes, in_chans)


@register_model(paper="arXiv:1807.11164")
def shufflenet_v2_x1_5(*, num_classes: int = 1000, in_chans: int = 3) -> ShuffleNetV2:
    return _shufflenet_v2(1.5, num_classes, in_chans)


@register_model(paper="arXiv:1807.11164")
def shufflenet_v2_x2_0(*, num_classes: int = 1000, in_chans: int = 3) -> ShuffleNetV2:
    return _shufflenet_v2(2.0, num_classes, in_chans)


@register_model(input_size=(3, 32, 32), paper="arXiv:1807.11164")
def shufflenet_v2_cifar(*, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0) -> ShuffleNetV2:
    return _shufflenet_v2(width_mult, num_classes, in_chans, small_input=True)
