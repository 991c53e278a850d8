"""The model contract every zoo model follows (checked by tests/models/test_models.py for every registered name).

- ``forward(x) == forward_head(forward_features(x))``
- ``forward_features(x)`` returns the last feature map (N, num_features, h, w) before global pooling
- ``forward_head(x, pre_logits=False)`` pools, (drops out) and classifies; ``pre_logits=True`` returns the pooled
  (N, num_features) vector
- ``reset_classifier(num_classes)`` replaces the classifier (0 gives an identity)
- ``num_features``, ``num_classes`` and ``default_input_size`` (C, H, W) attributes
- the model is ``torch.fx`` symbolically traceable (no data-dependent Python control flow), so the pruner and the
  exporter can see the whole graph; non-arithmetic ops (shuffle, split, permutation) are explicit modules.

:class:`ClassifierModel` gives the common head (global average pool -> dropout -> linear) for free.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.conv import call_flat


class ClassifierModel(nn.Module):
    """Base for zoo models with a ``features`` trunk and a pool -> dropout -> linear head.

    Subclasses build ``self.features`` (any module mapping images to a feature map) and call
    ``self._init_head(num_features, num_classes, drop_rate)``; families whose head differs override
    ``forward_head`` / ``reset_classifier``.
    """

    default_input_size: tuple[int, int, int] = (3, 224, 224)

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # nested nn.Sequential containers (stages, ConvBNAct) run without their own module call unless hooked
        return call_flat(self.features, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def feature_width(self) -> int:
        """The channels of ``forward_features``' output, read off the layers (so it holds after channel pruning,
        which sets ``num_features`` from it): the classifier's input width here; families whose head is not one
        linear layer on the pooled features override it."""
        head = getattr(self, "classifier", None)
        head = head if head is not None else getattr(self, "fc", None)  # ResNet, Inception name it fc
        return head.in_features if isinstance(head, nn.Linear) else self.num_features


def last_conv_width(trunk: nn.Module) -> int:
    """Output channels of the last ``nn.Conv2d`` registered in ``trunk`` (a plain conv stack: VGG, AlexNet)."""
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the trunk has no Conv2d layer")
    return convs[-1].out_channels


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without going more than 10% below ``v``
    (the rule MobileNet V2/V3 and MnasNet use, so torchvision's channel counts are reproduced exactly)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def init_weights(model: nn.Module, zero_init_last_bn: bool = False) -> None:
    """Kaiming-normal (fan_out) convs, unit BN, small-normal linears: the common torchvision init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
