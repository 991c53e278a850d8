"""Inception-v3 (Szegedy et al., CVPR 2016, arXiv:1512.00567) with the auxiliary head, as in torchvision.

Layer names and order are torchvision's ``Inception3`` (``Conv2d_1a_3x3 ... Mixed_7c, AuxLogits, fc``), so its
state dicts load unchanged; 27,161,264 parameters with the auxiliary head (23,834,568 without), ~5.7 G
multiply-adds at 299x299 (the paper rounds to "5 billion"; Table 3 lists 4.8 G ops for the final model).
In training mode with ``aux_logits=True`` the forward returns ``InceptionOutputs(logits, aux_logits)``, in eval
mode the logits only. The auxiliary head needs the full 17x17 grid, i.e. 299x299 inputs, when training.

``inception_v3_cifar`` keeps every module and its width but reaches the 35x35-module stage at 16x16 from a
32x32 image: stride-1 'same' stem convs, one padded max-pool (32 -> 16), then the two grid reductions (16 -> 7
-> 3); its optional auxiliary head pools adaptively.
"""

from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops.inception import (ConvBlock, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE,
                             basic_conv)
from ._base import ClassifierModel
from ._registry import register_model

__all__ = ["InceptionV3", "InceptionOutputs"]

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])

# torchvision Inception3 (paper Table 1: 3 x Fig. 5, reduction, 4 x Fig. 6, reduction, 2 x Fig. 7)
INCEPTION_V3_CFG: tuple[tuple[str, type[nn.Module], int, int | None], ...] = (
    # name, module, in_chs, pool_features (A) / channels_7x7 (C)
    ("Mixed_5b", InceptionA, 192, 32),
    ("Mixed_5c", InceptionA, 256, 64),
    ("Mixed_5d", InceptionA, 288, 64),
    ("Mixed_6a", InceptionB, 288, None),
    ("Mixed_6b", InceptionC, 768, 128),
    ("Mixed_6c", InceptionC, 768, 160),
    ("Mixed_6d", InceptionC, 768, 160),
    ("Mixed_6e", InceptionC, 768, 192),
    ("Mixed_7a", InceptionD, 768, None),
    ("Mixed_7b", InceptionE, 1280, None),
    ("Mixed_7c", InceptionE, 2048, None),
)
AUX_AFTER = "Mixed_6e"  # the auxiliary head reads the last 17x17 module

# ImageNet-normalized input -> the [-1, 1] scaling of the Google (TF) weights (torchvision transform_input)
_TF_SCALE = (0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5)
_TF_SHIFT = ((0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5)


class InceptionV3(ClassifierModel):
    """Stem (five convs, two max-pools) -> 11 Inception modules -> pool -> dropout -> fc (+ aux head on 17x17)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 transform_input: bool = False, drop_rate: float = 0.5, small_input: bool = False,
                 cfg: tuple = INCEPTION_V3_CFG, conv_block: ConvBlock = basic_conv) -> None:
        super().__init__()
        if transform_input and in_chans != 3:
            raise LightnnError(f"inception_v3: transform_input needs 3 input channels, got in_chans={in_chans}")
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        p = 1 if small_input else 0  # small inputs: 'same' stem convs instead of 'valid' ones
        self.Conv2d_1a_3x3 = conv_block(in_chans, 32, 3, stride=1 if small_input else 2, padding=p)
        self.Conv2d_2a_3x3 = conv_block(32, 32, 3, padding=p)
        self.Conv2d_2b_3x3 = conv_block(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2, padding=p)
        self.Conv2d_3b_1x1 = conv_block(64, 80, 1)
        self.Conv2d_4a_3x3 = conv_block(80, 192, 3, padding=p)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, 2)
        self._mixed: list[str] = []
        self.AuxLogits: nn.Module | None = None
        for name, module, in_c, width in cfg:
            setattr(self, name, module(in_c, width, conv_block=conv_block) if width else module(in_c, conv_block=conv_block))
            self._mixed.append(name)
            if name == AUX_AFTER and aux_logits:
                self.AuxLogits = InceptionAux(768, num_classes, conv_block=conv_block, adaptive=small_input)
        self.num_features = 2048
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2048, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision: truncated normal, std 0.1 (0.01 for the aux 5x5 conv, 0.001 for the aux fc)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.AuxLogits is not None:
            nn.init.trunc_normal_(self.AuxLogits.conv1.conv.weight, std=0.01, a=-2, b=2)
            nn.init.trunc_normal_(self.AuxLogits.fc.weight, std=0.001, a=-2, b=2)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        chans = [x[:, i:i + 1] * _TF_SCALE[i] + _TF_SHIFT[i] for i in range(3)]
        return torch.cat(chans, 1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(self._transform(x)))))
        return self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))

    def _modules_until_aux(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._mixed[: self._mixed.index(AUX_AFTER) + 1]:
            x = getattr(self, name)(x)
        return x

    def _modules_after_aux(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._mixed[self._mixed.index(AUX_AFTER) + 1:]:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._modules_after_aux(self._modules_until_aux(self._stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:
        x = self._modules_until_aux(self._stem(x))
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        logits = self.forward_head(self._modules_after_aux(x))
        return InceptionOutputs(logits, aux) if aux is not None else logits

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.AuxLogits is not None:
            self.AuxLogits.fc = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()


@register_model(input_size=(3, 299, 299), test_input_size=(3, 299, 299), paper="arXiv:1512.00567")
def inception_v3(*, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 transform_input: bool = False, drop_rate: float = 0.5) -> InceptionV3:
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, aux_logits=aux_logits,
                       transform_input=transform_input, drop_rate=drop_rate)


@register_model(input_size=(3, 32, 32), paper="arXiv:1512.00567")
def inception_v3_cifar(*, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                       drop_rate: float = 0.5) -> InceptionV3:
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, aux_logits=aux_logits, drop_rate=drop_rate,
                       small_input=True)
