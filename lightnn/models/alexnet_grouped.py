"""AlexNet as Krizhevsky, Sutskever and Hinton trained it (NIPS 2012), split over two GPUs, and a small CIFAR AlexNet.

The original network ran on two GPUs: conv2, conv4 and conv5 only see the feature maps on their own GPU, which is
a group convolution with 2 groups (the first use of grouped convs, Fig. 2); conv3 and the FC layers communicate
across both. Layers (Sec. 3.5; Caffe ``bvlc_alexnet``): conv 11x11/4 96 -> ReLU -> LRN -> max pool 3/2, conv 5x5
256 (g=2) -> ReLU -> LRN -> max pool, conv 3x3 384, conv 3x3 384 (g=2), conv 3x3 256 (g=2) -> max pool, FC 4096,
FC 4096 (ReLU and dropout 0.5 each), FC 1000. That is 60,965,224 parameters ("61M", the AlexNet of Deep
Compression Table 1 and MobileNet Table 8's "60 M") and 724 M multiply-adds (MobileNet Table 8: 720 M) at 224
with 2 pixels of padding on conv1 (identical to Caffe's 227 without padding). torchvision's ``alexnet`` is the
later one-tower variant (64/192/384/256/256 filters, no LRN, 61,100,840 parameters).

``alexnet_grouped_cifar`` keeps the two towers for 32x32 inputs (3x3/1 conv1, FC 1024).
``alexnet_small_cifar`` is the small AlexNet used for CIFAR-10 (Zhang et al. 2017, "Understanding deep learning requires
rethinking generalization", Sec. A; after the TensorFlow CIFAR-10 tutorial): two 5x5 conv layers of 64 filters,
each followed by 3x3/2 max pooling and LRN, then FC 384 -> FC 192 -> FC 10. It is FC-heavy (94% of its weights
are in FC layers), which is what Deep Compression exploits. At 28x28 crops it has 1,387,786 parameters (Zhang et
al. Table 1); at the full 32x32 it has 1,756,426.

Both nets' "features" are the last hidden FC layer's activations (``forward_features`` returns (N, 4096) or
(N, 192)); ``forward_head`` applies the final dropout and FC.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import LightnnError
from ..ops.activations import get_act
from ._base import ClassifierModel, init_weights
from ._registry import register_model
from .lenet import FCHeadMixin

__all__ = ["AlexNetGrouped", "AlexNetCifar", "ALEXNET_GROUPED_CFG", "ALEXNET_GROUPED_CIFAR_CFG", "ALEXNET_CIFAR_CFG"]

# Krizhevsky et al. 2012 Fig. 2 (both towers together)
ALEXNET_GROUPED_CFG: tuple[tuple[int, int, int, int, int, bool, bool], ...] = (
    # out_chs, kernel, stride, padding, groups, lrn, max pool after
    (96, 11, 4, 2, 1, True, True),
    (256, 5, 1, 2, 2, True, True),
    (384, 3, 1, 1, 1, False, False),
    (384, 3, 1, 1, 2, False, False),
    (256, 3, 1, 1, 2, False, True),
)
ALEXNET_GROUPED_FC = (4096, 4096)  # hidden FC widths
ALEXNET_POOL = 6  # conv5's pooled map at 224; smaller inputs are average-pooled up to it, as in torchvision

# 32x32 variant of the two-tower net: a 3x3/1 conv1 (as CIFAR stems do), the same towers, 32 -> 15 -> 7 -> 3
ALEXNET_GROUPED_CIFAR_CFG: tuple[tuple[int, int, int, int, int, bool, bool], ...] = (
    # out_chs, kernel, stride, padding, groups, lrn, max pool after
    (96, 3, 1, 1, 1, True, True),
    (256, 5, 1, 2, 2, True, True),
    (384, 3, 1, 1, 1, False, False),
    (384, 3, 1, 1, 2, False, False),
    (256, 3, 1, 1, 2, False, True),
)
ALEXNET_GROUPED_CIFAR_FC = (1024, 1024)

# Zhang et al. 2017 small AlexNet (TF CIFAR-10 tutorial)
ALEXNET_CIFAR_CFG: tuple[tuple[int, int], ...] = (
    # out_chs, kernel (each: 'same' conv -> ReLU -> max pool 3/2 -> LRN)
    (64, 5),
    (64, 5),
)
ALEXNET_CIFAR_FC = (384, 192)  # hidden FC widths


def krizhevsky_lrn() -> nn.LocalResponseNorm:
    """Sec. 3.3: b = a / (k + alpha sum_{n neighbours} a^2)^beta with k=2, n=5, alpha=1e-4, beta=0.75.

    PyTorch divides alpha by n, so alpha is passed as n * 1e-4.
    """
    return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)


def tf_cifar_lrn() -> nn.LocalResponseNorm:
    """The TF CIFAR-10 tutorial's ``lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75)`` (size 9)."""
    return nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)


def _fc_stack(in_features: int, widths: tuple[int, ...], drop_rate: float) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU] per width, dropout between them (the last dropout lives in the head)."""
    layers: list[nn.Module] = [nn.Flatten(1)]
    prev = in_features
    for i, w in enumerate(widths):
        layers += [nn.Linear(prev, w), nn.ReLU(inplace=True)]
        if drop_rate > 0 and i < len(widths) - 1:
            layers.append(nn.Dropout(drop_rate))
        prev = w
    return nn.Sequential(*layers)


class AlexNetGrouped(FCHeadMixin, ClassifierModel):
    """The two-tower AlexNet: 5 convs (conv2/4/5 with ``groups``) -> pool to 6x6 -> FC 4096 -> FC 4096 -> FC.

    ``groups=1`` gives the single-GPU network with the same widths (Krizhevsky's "one GPU" ablation halves the
    widths instead: use ``width_mult=0.5, groups=1``).
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, groups: int = 2, width_mult: float = 1.0,
                 lrn: bool = True, drop_rate: float = 0.5, img_size: int = 224,
                 cfg: tuple[tuple[int, int, int, int, int, bool, bool], ...] = ALEXNET_GROUPED_CFG,
                 fc: tuple[int, ...] = ALEXNET_GROUPED_FC, pool_size: int = ALEXNET_POOL) -> None:
        super().__init__()
        if groups < 1:
            raise LightnnError(f"alexnet_grouped: groups must be >= 1, got {groups}")
        if width_mult <= 0:
            raise LightnnError(f"alexnet_grouped: width_mult must be > 0, got {width_mult}")
        self.groups, self.width_mult = groups, width_mult
        self.default_input_size = (in_chans, img_size, img_size)
        layers: list[nn.Module] = []
        prev = in_chans
        for out_chs, k, s, p, g, use_lrn, pool in cfg:
            out_chs = max(1, int(round(out_chs * width_mult)))
            g = groups if g > 1 else 1
            if prev % g or out_chs % g:
                raise LightnnError(f"alexnet_grouped: a {k}x{k} conv from {prev} to {out_chs} channels cannot be "
                                   f"split into groups={g} (towers); choose width_mult/groups so both divide")
            layers += [nn.Conv2d(prev, out_chs, k, s, p, groups=g), nn.ReLU(inplace=True)]
            if use_lrn and lrn:
                layers.append(krizhevsky_lrn())
            if pool:
                layers.append(nn.MaxPool2d(3, 2))  # overlapping pooling (Sec. 3.4)
            prev = out_chs
        layers.append(nn.AdaptiveAvgPool2d(pool_size))
        self.features = nn.Sequential(*layers)
        fc = tuple(max(1, int(round(w * width_mult))) for w in fc)
        self.pre_logits = _fc_stack(prev * pool_size * pool_size, fc, drop_rate)
        self._init_head(fc[-1], num_classes, drop_rate)
        init_weights(self)


class AlexNetCifar(FCHeadMixin, ClassifierModel):
    """Small AlexNet for 32x32: [conv 5x5 64 -> ReLU -> max pool 3/2 -> LRN] x 2 -> FC 384 -> FC 192 -> FC."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, width_mult: float = 1.0,
                 lrn: bool = True, drop_rate: float = 0.0, act: str = "relu",
                 cfg: tuple[tuple[int, int], ...] = ALEXNET_CIFAR_CFG, fc: tuple[int, ...] = ALEXNET_CIFAR_FC) -> None:
        super().__init__()
        if width_mult <= 0:
            raise LightnnError(f"alexnet_cifar: width_mult must be > 0, got {width_mult}")
        if img_size < 1:
            raise LightnnError(f"alexnet_cifar: img_size must be >= 1, got {img_size}")
        self.default_input_size = (in_chans, img_size, img_size)
        layers: list[nn.Module] = []
        prev, size = in_chans, img_size
        for out_chs, k in cfg:
            out_chs = max(1, int(round(out_chs * width_mult)))
            layers += [nn.Conv2d(prev, out_chs, k, 1, k // 2), get_act(act), nn.MaxPool2d(3, 2, 1)]
            if lrn:
                layers.append(tf_cifar_lrn())
            prev, size = out_chs, (size - 1) // 2 + 1  # 'same' pooling: ceil(size / 2)
        self.features = nn.Sequential(*layers)
        fc = tuple(max(1, int(round(w * width_mult))) for w in fc)
        self.pre_logits = _fc_stack(prev * size * size, fc, drop_rate)
        self._init_head(fc[-1], num_classes, drop_rate)
        init_weights(self)


@register_model(input_size=(3, 224, 224), paper="Krizhevsky et al. 2012 (two-GPU split); Deep Compression Table 1")
def alexnet_grouped(*, num_classes: int = 1000, in_chans: int = 3, groups: int = 2, **kwargs) -> AlexNetGrouped:
    return AlexNetGrouped(num_classes=num_classes, in_chans=in_chans, groups=groups, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Krizhevsky et al. 2012 two-tower split, 3x3 conv1 and FC 1024 for 32x32")
def alexnet_grouped_cifar(*, num_classes: int = 1000, in_chans: int = 3, groups: int = 2,
                          **kwargs) -> AlexNetGrouped:
    kwargs.setdefault("img_size", 32)
    return AlexNetGrouped(num_classes=num_classes, in_chans=in_chans, groups=groups, cfg=ALEXNET_GROUPED_CIFAR_CFG,
                          fc=ALEXNET_GROUPED_CIFAR_FC, pool_size=3, **kwargs)


@register_model(input_size=(3, 32, 32), paper="Zhang et al. 2017 small AlexNet (1,387,786 params at 28x28)")
def alexnet_small_cifar(*, num_classes: int = 1000, in_chans: int = 3, img_size: int = 32, **kwargs) -> AlexNetCifar:
    return AlexNetCifar(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
