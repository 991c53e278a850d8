"""VGG-16 (Simonyan & Zisserman, ICLR 2015, arXiv:1409.1556), configuration D, as in torchvision.

``vgg16`` matches torchvision exactly (138,357,544 parameters; ``batch_norm=True`` gives ``vgg16_bn``'s
138,365,992) with the same layer names, so its state dicts load unchanged. ``vgg16_cifar`` is the common
32x32 VGG-16 with BatchNorm after every conv and one linear classifier on the 1x1x512 map (the baseline of
the CIFAR pruning papers).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._base import ClassifierModel, init_weights, last_conv_width
from ._registry import register_model

__all__ = ["VGG"]

# Paper Table 1, column D: conv widths, "M" = 2x2 max-pool
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")


class VGG(ClassifierModel):
    """3x3 conv (+BN) + ReLU stacks with max-pools -> adaptive pool -> MLP (4096-4096) or a single linear layer.

    With the MLP head, ``forward_head(pre_logits=True)`` returns the globally average-pooled trunk
    (N, ``num_features``); the logits go through the MLP on the ``pool_size`` x ``pool_size`` map as in
    torchvision. Without hidden layers (``hidden=0``) it is the usual pool -> linear head.
    """

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 1000, in_chans: int = 3,
                 batch_norm: bool = False, pool_size: int = 7, hidden: int = 4096, drop_rate: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_c = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(in_c, int(v), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            in_c = int(v)
        self.features = nn.Sequential(*layers)
        self.num_features = in_c
        self.num_classes = num_classes
        self.hidden = hidden
        if hidden:
            self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
            self.classifier = nn.Sequential(
                nn.Linear(in_c * pool_size * pool_size, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(in_c, num_classes)
        init_weights(self)

    def feature_width(self) -> int:  # the MLP head reads the flattened pooled map, not a pooled vector
        return last_conv_width(self.features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        last = self.classifier[-1] if self.hidden else self.classifier
        width = last.in_features if isinstance(last, nn.Linear) else (self.hidden or self.num_features)  # pruned too
        head = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        if self.hidden:
            self.classifier[-1] = head
        else:
            self.classifier = head


@register_model(paper="arXiv:1409.1556")
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, batch_norm: bool = False, drop_rate: float = 0.5) -> VGG:
    return VGG(VGG16_CFG, num_classes=num_classes, in_chans=in_chans, batch_norm=batch_norm, drop_rate=drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1409.1556")
def vgg16_cifar(*, num_classes: int = 1000, in_chans: int = 3) -> VGG:
    return VGG(VGG16_CFG, num_classes=num_classes, in_chans=in_chans, batch_norm=True, hidden=0)
