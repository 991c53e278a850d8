"""Convolution building blocks: standard, group, depthwise, pointwise, and the Conv-BN-activation unit.

Cost (MACs = multiply-adds; H x W output, N input, M output channels, K x K kernel, G groups):
standard H W N K^2 M MACs and K^2 N M params; group conv divides both by G; depthwise (G = N = M) is H W K^2 M;
pointwise is H W N M; a depthwise-separable pair costs 1/M + 1/K^2 of the standard conv.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.nn.modules import module as _module_globals

from ..errors import LightnnError
from .activations import get_act

ActLike = str | type[nn.Module] | Callable[[], nn.Module] | None
NormLike = Callable[..., nn.Module]  # called as norm(num_features, eps=..., momentum=...), like nn.BatchNorm2d


def check_groups(in_chs: int, out_chs: int, groups: int, what: str = "conv") -> None:
    """Raise a clear error when channels do not divide into ``groups``."""
    if in_chs < 1 or out_chs < 1:
        raise LightnnError(f"{what}: channel counts must be positive, got in={in_chs}, out={out_chs}")
    if groups < 1:
        raise LightnnError(f"{what}: groups must be >= 1, got {groups}")
    if in_chs % groups or out_chs % groups:
        raise LightnnError(
            f"{what}: in_channels={in_chs} and out_channels={out_chs} must both be divisible by groups={groups}"
        )


def _check_kernel_stride(kernel_size: int | tuple[int, int], stride: int, what: str) -> None:
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if any(k < 1 for k in ks):
        raise LightnnError(f"{what}: kernel_size must be >= 1, got {kernel_size}")
    if stride < 1:
        raise LightnnError(f"{what}: stride must be >= 1, got {stride}")


def same_padding(kernel_size: int | tuple[int, int], dilation: int = 1) -> int | tuple[int, int]:
    if isinstance(kernel_size, int):
        return dilation * (kernel_size - 1) // 2
    return tuple(dilation * (k - 1) // 2 for k in kernel_size)


def conv2d(in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1, groups: int = 1,
           bias: bool = False, dilation: int = 1, padding: int | tuple[int, int] | None = None) -> nn.Conv2d:
    """An ``nn.Conv2d`` with 'same' padding and validated shapes."""
    check_groups(in_chs, out_chs, groups)
    _check_kernel_stride(kernel_size, stride, "conv")
    pad = same_padding(kernel_size, dilation) if padding is None else padding
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, pad, dilation=dilation, groups=groups, bias=bias)


def group_conv(in_chs: int, out_chs: int, kernel_size: int = 3, groups: int = 2, stride: int = 1,
               bias: bool = False) -> nn.Conv2d:
    """Group convolution: each of ``groups`` partitions sees in_chs/groups inputs (cost / groups)."""
    return conv2d(in_chs, out_chs, kernel_size, stride, groups=groups, bias=bias)


def depthwise_conv(chs: int, kernel_size: int = 3, stride: int = 1, bias: bool = False,
                   multiplier: int = 1) -> nn.Conv2d:
    """Depthwise convolution: one K x K filter per channel (groups = channels)."""
    return conv2d(chs, chs * multiplier, kernel_size, stride, groups=chs, bias=bias)


def pointwise_conv(in_chs: int, out_chs: int, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (optionally grouped): the channel-mixing half of a depthwise-separable conv."""
    return conv2d(in_chs, out_chs, 1, 1, groups=groups, bias=bias)


def call_flat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, but a plain ``nn.Sequential`` (``ConvBNAct`` included) is run by calling its layers directly,
    recursively: one Python module call less per container, which is a visible share of a small network's time
    at batch 1 in eager mode. A container with hooks of its own (forward or backward, or while global module hooks
    are set) is called normally so every hook fires; leaves are always called normally.
    """
    if type(module).forward is not _SEQUENTIAL_FORWARD or _has_hooks(module):
        return module(x)
    for m in module._modules.values():
        x = call_flat(m, x) if type(m).forward is _SEQUENTIAL_FORWARD else m(x)
    return x


_SEQUENTIAL_FORWARD = nn.Sequential.forward


def _has_hooks(module: nn.Module) -> bool:
    """What ``nn.Module.__call__`` checks before taking its fast path: the module's hooks and the global ones."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or _module_globals._global_forward_hooks
                or _module_globals._global_forward_pre_hooks or _module_globals._global_backward_hooks
                or _module_globals._global_backward_pre_hooks)


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> activation, the unit almost every efficient CNN is built from.

    Kept as ``nn.Sequential`` with children ``conv``, ``bn``, ``act`` so BN folding, pruning and export can find
    the pieces by name. Without an activation (``act=None``, the linear projections of inverted residuals) there
    is no ``act`` child: an ``nn.Identity`` would cost one more module call per block in eager mode.
    ``norm_layer`` replaces BatchNorm2d (any class taking ``(num_features, eps=, momentum=)``); the child is still
    named ``bn``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 3, stride: int = 1,
                 groups: int = 1, act: ActLike = "relu", bn: bool = True, bias: bool | None = None,
                 dilation: int = 1, padding: int | tuple[int, int] | None = None,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, norm_layer: NormLike = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = conv2d(in_chs, out_chs, kernel_size, stride, groups,
                           bias=(not bn) if bias is None else bias, dilation=dilation, padding=padding)
        self.bn = norm_layer(out_chs, eps=bn_eps, momentum=bn_momentum) if bn else nn.Identity()
        act_m = get_act(act)
        if not isinstance(act_m, nn.Identity):
            self.act = act_m
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride


class DepthwiseSeparable(nn.Module):
    """Depthwise K x K conv-BN-act then pointwise 1x1 conv-BN-act (MobileNet V1 / Xception unit)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, act: ActLike = "relu",
                 pw_act: bool = True) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, act=act)
        self.pw = ConvBNAct(in_chs, out_chs, 1, act=act if pw_act else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))
