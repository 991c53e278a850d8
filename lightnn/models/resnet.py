"""ImageNet ResNets (He et al., CVPR 2016, arXiv:1512.03385): resnet18 / resnet34 / resnet50, and resnet18_cifar.

Layer names and order are torchvision's (``conv1, bn1, layer1..layer4, fc``; blocks ``conv1, bn1, conv2, bn2,
[conv3, bn3,] downsample``), so a torchvision state dict loads unchanged (11,689,512 / 21,797,672 / 25,557,032
parameters). The bottleneck strides on its 3x3 conv (torchvision's "ResNet v1.5"). The CIFAR variant uses a
3x3 stride-1 stem without max-pool (32x32 -> 4x4 at layer4), the common small-input ResNet-18.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import get_act
from ..ops.conv import ActLike
from ._base import ClassifierModel, init_weights
from ._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _downsample(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut (paper Fig. 5 left)."""

    expansion = 1

    def __init__(self, in_chs: int, chs: int, stride: int = 1, act: ActLike = "relu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.relu = get_act(act)
        self.conv2 = nn.Conv2d(chs, chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)
        self.downsample = _downsample(in_chs, chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.downsample(x)  # in place, as torchvision: no new activation-sized tensor per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here) -> 1x1 expand x4, with a shortcut (paper Fig. 5 right)."""

    expansion = 4

    def __init__(self, in_chs: int, chs: int, stride: int = 1, act: ActLike = "relu") -> None:
        super().__init__()
        out_chs = chs * self.expansion
        self.conv1 = nn.Conv2d(in_chs, chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.conv2 = nn.Conv2d(chs, chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)
        self.conv3 = nn.Conv2d(chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = get_act(act)
        self.downsample = _downsample(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.downsample(x)
        return self.relu(out)


# Paper Table 1
RESNET_CFG: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    # depth: block, blocks per stage (64/128/256/512 base widths, strides 1/2/2/2)
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(ClassifierModel):
    """Stem (7x7 s2 conv + 3x3 s2 max-pool, or 3x3 s1 conv for 32x32 inputs) -> four stages -> pool -> fc."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int = 1000,
                 in_chans: int = 3, small_input: bool = False, widths: tuple[int, ...] = (64, 128, 256, 512),
                 act: ActLike = "relu") -> None:
        super().__init__()
        stem = widths[0]
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, stem, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = get_act(act)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        in_c = stem
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_c, w, (1 if i == 0 else 2) if j == 0 else 1, act=act))
                in_c = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = in_c
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_c, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _resnet(depth: int, num_classes: int, in_chans: int, small_input: bool = False) -> ResNet:
    block, layers = RESNET_CFG[depth]
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, small_input=small_input)


@register_model(paper="arXiv:1512.03385")
def resnet18(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return _resnet(18, num_classes, in_chans)


@register_model(paper="arXiv:1512.03385")
def resnet34(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return _resnet(34, num_classes, in_chans)


@register_model(paper="arXiv:1512.03385")
def resnet50(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return _resnet(50, num_classes, in_chans)


@register_model(input_size=(3, 32, 32), paper="arXiv:1512.03385")
def resnet18_cifar(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return _resnet(18, num_classes, in_chans, small_input=True)
