"""AlexNet (Krizhevsky et al., NeurIPS 2012), single-tower as in torchvision (61,100,840 parameters).

torchvision's variant ("One weird trick", arXiv:1404.5997) uses 64/192/384/256/256 filters in one tower; the
original two-GPU grouped split is ``alexnet_grouped``. Layer names match torchvision, so its state dicts load
unchanged. The 32x32 variant ``alexnet_cifar`` keeps the five convs (3x3/5x5, stride 1) and the three pools
(32 -> 4) with a smaller 4x4-pooled MLP head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._base import ClassifierModel, last_conv_width
from ._registry import register_model

__all__ = ["AlexNet"]

Row = tuple[int, int, int, int, bool]

# torchvision alexnet.features
ALEXNET_CFG: tuple[Row, ...] = (
    # out, k, s, pad, maxpool after
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)

ALEXNET_CIFAR_CFG: tuple[Row, ...] = (
    # out, k, s, pad, maxpool after
    (64, 3, 1, 1, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


class AlexNet(ClassifierModel):
    """Five convs (ReLU, three 3x3 s2 max-pools) -> adaptive pool to ``pool_size`` -> 3-layer MLP with dropout.

    ``num_features`` is the conv trunk's width (256); ``forward_head(pre_logits=True)`` returns the globally
    average-pooled trunk (the contract's pooled embedding), while the logits go through the MLP on the
    ``pool_size`` x ``pool_size`` map, as in torchvision.
    """

    def __init__(self, cfg: tuple[Row, ...] = ALEXNET_CFG, num_classes: int = 1000, in_chans: int = 3,
                 pool_size: int = 6, hidden: int = 4096, drop_rate: float = 0.5, pool_kernel: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_c = in_chans
        for out, k, s, pad, pool in cfg:
            layers += [nn.Conv2d(in_c, out, k, s, pad), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(pool_kernel, 2))
            in_c = out
        self.features = nn.Sequential(*layers)
        self.num_features = in_c
        self.num_classes = num_classes
        self.hidden = hidden
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(in_c * pool_size * pool_size, hidden), nn.ReLU(inplace=True),
            nn.Dropout(drop_rate), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def feature_width(self) -> int:  # the MLP head reads the flattened pooled map, not a pooled vector
        return last_conv_width(self.features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        width = self.classifier[-1].in_features  # the hidden width, after pruning too
        self.classifier[-1] = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()


@register_model(paper="NeurIPS 2012; arXiv:1404.5997")
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5) -> AlexNet:
    return AlexNet(ALEXNET_CFG, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)


@register_model(input_size=(3, 32, 32), paper="NeurIPS 2012")
def alexnet_cifar(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5) -> AlexNet:
    # 3x3 s2 pools with 'floor' take 32 -> 15 -> 7 -> 3; 2x2 pools take 32 -> 16 -> 8 -> 4.
    return AlexNet(ALEXNET_CIFAR_CFG, num_classes=num_classes, in_chans=in_chans, pool_size=4, hidden=1024,
                   drop_rate=drop_rate, pool_kernel=2)
