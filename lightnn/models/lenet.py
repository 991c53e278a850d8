"""LeNet-300-100 and LeNet-5, the MNIST baselines of Deep Compression (Han, Mao, Dally; ICLR 2016, Table 1).

Both are the Caffe reference networks the paper compressed:

- LeNet-300-100 (LeCun et al. 1998): a fully connected net 784 -> 300 -> 100 -> 10 with ReLU, 266,200 weights
  (266,610 with biases, 1070 KB in fp32: Table 1).
- LeNet-5, Caffe variant: conv 5x5x20 -> max pool 2 -> conv 5x5x50 -> max pool 2 -> FC 500 -> ReLU -> FC 10.
  Caffe's ``lenet.prototxt`` has no activation after the convs; ``conv_act="relu"`` adds one. 430,500 weights
  (431,080 with biases, "431K", 1720 KB: Table 1).

Both default to 1 x 28 x 28 MNIST input; ``in_chans`` and ``img_size`` size the first FC layer for other inputs
(``in_chans=3, img_size=32`` for CIFAR). The models' "features" are the last hidden FC layer's activations (there
is no spatial map to pool): ``forward_features`` returns (N, num_features) and ``forward_head`` only classifies.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError
from ..ops.activations import get_act
from ._base import ClassifierModel
from ._registry import register_model

__all__ = ["LeNet300100", "LeNet5", "FCHeadMixin", "caffe_xavier_init"]

LENET_300_100_HIDDEN = (300, 100)  # hidden FC widths
LENET5_CFG = (
    # conv out_chs, kernel (each followed by 2x2/s2 max pool)
    (20, 5),
    (50, 5),
)
LENET5_FC = (500,)  # hidden FC widths


class FCHeadMixin:
    """Head for nets whose penultimate layer is an FC layer: features are already a (N, C) vector."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_logits(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return x if pre_logits else self.classifier(self.dropout(x))


def _mlp(in_features: int, widths: tuple[int, ...], act: str, drop_rate: float = 0.0) -> tuple[nn.Sequential, int]:
    """Flatten -> [Linear -> act (-> dropout except after the last)] per width."""
    layers: list[nn.Module] = [nn.Flatten(1)]
    prev = in_features
    for i, w in enumerate(widths):
        layers += [nn.Linear(prev, w), get_act(act)]
        if drop_rate > 0 and i < len(widths) - 1:
            layers.append(nn.Dropout(drop_rate))
        prev = w
    return nn.Sequential(*layers), prev


def caffe_xavier_init(model: nn.Module) -> None:
    """Caffe's "xavier" filler, which the reference LeNets use: U(-a, a), a = sqrt(3 / fan_in); zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = (3.0 / fan_in) ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_size(name: str, in_chans: int, img_size: int) -> None:
    if in_chans < 1 or img_size < 1:
        raise LightnnError(f"{name}: in_chans and img_size must be >= 1, got in_chans={in_chans}, img_size={img_size}")


class LeNet300100(FCHeadMixin, ClassifierModel):
    """Flatten -> FC 300 -> ReLU -> FC 100 -> ReLU -> FC num_classes."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                 hidden: tuple[int, ...] = LENET_300_100_HIDDEN, act: str = "relu", drop_rate: float = 0.0) -> None:
        super().__init__()
        _check_size("lenet_300_100", in_chans, img_size)
        if not hidden or any(h < 1 for h in hidden):
            raise LightnnError(f"lenet_300_100: hidden widths must be >= 1, got {tuple(hidden)}")
        self.default_input_size = (in_chans, img_size, img_size)
        self.features = nn.Identity()  # no convolutional trunk
        self.pre_logits, prev = _mlp(in_chans * img_size * img_size, tuple(hidden), act, drop_rate)
        self._init_head(prev, num_classes, drop_rate)
        caffe_xavier_init(self)


class LeNet5(FCHeadMixin, ClassifierModel):
    """conv 5x5x20 -> pool -> conv 5x5x50 -> pool -> FC 500 -> ReLU -> FC num_classes (Caffe ``lenet.prototxt``)."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                 cfg: tuple[tuple[int, int], ...] = LENET5_CFG, fc: tuple[int, ...] = LENET5_FC,
                 conv_act: str | None = None, act: str = "relu", drop_rate: float = 0.0) -> None:
        super().__init__()
        _check_size("lenet5", in_chans, img_size)
        self.default_input_size = (in_chans, img_size, img_size)
        layers: list[nn.Module] = []
        prev, size = in_chans, img_size
        for out_chs, k in cfg:  # 'valid' convs and 2x2 pools, as in Caffe: 28 -> 24 -> 12 -> 8 -> 4
            size = (size - k + 1) // 2
            if size < 1:
                raise LightnnError(f"lenet5: img_size={img_size} is too small for {len(cfg)} valid {k}x{k} convs "
                                   f"each followed by a 2x2 pool")
            layers += [nn.Conv2d(prev, out_chs, k), get_act(conv_act), nn.MaxPool2d(2, 2)]
            prev = out_chs
        self.features = nn.Sequential(*layers)
        self.pre_logits, prev = _mlp(prev * size * size, tuple(fc), act, drop_rate)
        self._init_head(prev, num_classes, drop_rate)
        caffe_xavier_init(self)


@register_model(input_size=(1, 28, 28), test_input_size=(1, 28, 28),
                paper="Han et al. 2016 (Deep Compression) Table 1: LeNet-300-100, 266K weights")
def lenet_300_100(*, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, **kwargs) -> LeNet300100:
    return LeNet300100(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


@register_model(input_size=(1, 28, 28), test_input_size=(1, 28, 28),
                paper="Han et al. 2016 (Deep Compression) Table 1: LeNet-5 (Caffe), 431K weights")
def lenet5(*, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, **kwargs) -> LeNet5:
    return LeNet5(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
