"""Versatile filters (Wang et al., "Learning Versatile Filters for Efficient Convolutional Neural Networks",
NeurIPS 2018; extended arXiv:2109.09310; seed 004).

- Spatial: a d x d primary filter f yields s = ceil(d/2) secondary filters M_i o f with concentric masks
  M_i(p, q) = 1 iff i <= p, q <= d + 1 - i (1-based), i.e. the full d x d, then (d-2) x (d-2), ... centres. Their
  outputs are concatenated, so n primary filters give n s channels for the parameters of n filters.
- Channel: a d x d x c^ primary filter slides along the input channels with channel stride g, giving
  n = (c - c^) / g + 1 outputs per filter.

``forward`` computes the multi-branch (training) form literally: one cropped conv per spatial mask, one conv per
channel window. ``merge()`` returns the single ``nn.Conv2d`` used at inference, whose filters are the masked /
zero-padded secondary filters (re-parameterization); ``merge(mode="sum")`` gives the paper's naive version
y = [sum_i M_i o f] @ x, the sum of each primary filter's secondary outputs. Learned masks are a separate feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError

__all__ = ["spatial_masks", "SpatialVersatileConv2d", "ChannelVersatileConv2d"]


def spatial_masks(d: int) -> torch.Tensor:
    """The s = ceil(d/2) concentric binary masks (s, d, d): M_i(p, q) = 1 iff i <= p, q <= d + 1 - i."""
    if d < 1:
        raise LightnnError(f"versatile: kernel size must be >= 1, got {d}")
    s = math.ceil(d / 2)
    idx = torch.arange(1, d + 1)
    masks = torch.zeros(s, d, d)
    for i in range(1, s + 1):
        inside = (idx >= i) & (idx <= d + 1 - i)
        masks[i - 1] = (inside[:, None] & inside[None, :]).float()
    return masks


def _init_conv_like(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        nn.init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class SpatialVersatileConv2d(nn.Module):
    """n primary d x d filters -> n * s output channels (filter-major: channel j*s + i is M_{i+1} o f_j).

    Each secondary filter has its own bias when ``bias=True``. Secondary filter i is computed as the primary filter
    cropped by i on every side with the padding reduced by i (same output, fewer MACs than the masked form).
    """

    def __init__(self, in_chs: int, num_primary: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, bias: bool = False) -> None:
        super().__init__()
        if in_chs < 1 or num_primary < 1:
            raise LightnnError(f"SpatialVersatileConv2d: channels must be positive, got in={in_chs}, "
                               f"primary={num_primary}")
        if stride < 1:
            raise LightnnError(f"SpatialVersatileConv2d: stride must be >= 1, got {stride}")
        d = kernel_size
        self.s = math.ceil(d / 2) if d >= 1 else 0
        padding = (d - 1) // 2 if padding is None else padding
        if padding < self.s - 1:
            raise LightnnError(f"SpatialVersatileConv2d: padding={padding} is smaller than the {self.s - 1} "
                               f"that the innermost mask of a {d}x{d} filter crops")
        self.in_chs, self.num_primary, self.kernel_size = in_chs, num_primary, d
        self.stride, self.padding = stride, padding
        self.out_chs = num_primary * self.s
        self.weight = nn.Parameter(torch.empty(num_primary, in_chs, d, d))
        self.bias = nn.Parameter(torch.empty(self.out_chs)) if bias else None
        self.register_buffer("masks", spatial_masks(d), persistent=False)
        _init_conv_like(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, outs = self.kernel_size, []
        for i in range(self.s):
            w = self.weight[:, :, i:d - i, i:d - i]
            outs.append(F.conv2d(x, w, None, self.stride, self.padding - i))
        y = torch.stack(outs, 2)  # (N, n, s, H, W): filter-major channel order
        y = y.flatten(1, 2)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def secondary_weight(self) -> torch.Tensor:
        """(n s, in, d, d) secondary filters M_i o f_j in output-channel order."""
        w = self.weight[:, None] * self.masks[None, :, None]  # (n, s, in, d, d)
        return w.flatten(0, 1)

    @torch.no_grad()
    def merge(self, mode: str = "concat") -> nn.Conv2d:
        """One ``nn.Conv2d`` for inference: ``"concat"`` equals ``forward``; ``"sum"`` is the naive version whose
        output channel j is the sum of primary filter j's s secondary outputs."""
        w = self.secondary_weight()
        if mode == "concat":
            conv = nn.Conv2d(self.in_chs, self.out_chs, self.kernel_size, self.stride, self.padding,
                             bias=self.bias is not None)
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        elif mode == "sum":
            conv = nn.Conv2d(self.in_chs, self.num_primary, self.kernel_size, self.stride, self.padding,
                             bias=self.bias is not None)
            conv.weight.copy_(w.view(self.num_primary, self.s, *w.shape[1:]).sum(1))
            if self.bias is not None:
                conv.bias.copy_(self.bias.view(self.num_primary, self.s).sum(1))
        else:
            raise LightnnError(f"SpatialVersatileConv2d.merge: mode must be 'concat' or 'sum', got {mode!r}")
        return conv.to(self.weight.device)

    def extra_repr(self) -> str:
        return (f"{self.in_chs}, primary={self.num_primary}, kernel_size={self.kernel_size}, s={self.s}, "
                f"out={self.out_chs}, stride={self.stride}")


class ChannelVersatileConv2d(nn.Module):
    """n_f primary d x d x c^ filters sliding along the input channels with channel stride g: each yields
    n = (c - c^) / g + 1 outputs (filter-major: channel j*n + t sees input channels t g .. t g + c^ - 1)."""

    def __init__(self, in_chs: int, num_primary: int, active_chs: int, channel_stride: int = 1,
                 kernel_size: int = 3, stride: int = 1, padding: int | None = None, bias: bool = False) -> None:
        super().__init__()
        if num_primary < 1:
            raise LightnnError(f"ChannelVersatileConv2d: num_primary must be >= 1, got {num_primary}")
        if not 1 <= active_chs <= in_chs:
            raise LightnnError(f"ChannelVersatileConv2d: active_chs (c^) must be in 1..{in_chs}, got {active_chs}")
        if channel_stride < 1 or (in_chs - active_chs) % channel_stride:
            raise LightnnError(f"ChannelVersatileConv2d: (c - c^) = {in_chs - active_chs} must be divisible by the "
                               f"channel stride g = {channel_stride}")
        if kernel_size < 1 or stride < 1:
            raise LightnnError(f"ChannelVersatileConv2d: kernel_size and stride must be >= 1, got "
                               f"{kernel_size}, {stride}")
        self.in_chs, self.num_primary = in_chs, num_primary
        self.active_chs, self.channel_stride = active_chs, channel_stride
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = (kernel_size - 1) // 2 if padding is None else padding
        self.n = (in_chs - active_chs) // channel_stride + 1
        self.out_chs = num_primary * self.n
        self.weight = nn.Parameter(torch.empty(num_primary, active_chs, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_chs)) if bias else None
        _init_conv_like(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, c = self.channel_stride, self.active_chs
        outs = [F.conv2d(x[:, t * g:t * g + c], self.weight, None, self.stride, self.padding) for t in range(self.n)]
        y = torch.stack(outs, 2).flatten(1, 2)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    @torch.no_grad()
    def merge(self) -> nn.Conv2d:
        """The equivalent dense ``nn.Conv2d`` (zeros outside each filter's channel window)."""
        conv = nn.Conv2d(self.in_chs, self.out_chs, self.kernel_size, self.stride, self.padding,
                         bias=self.bias is not None).to(self.weight.device)
        conv.weight.zero_()
        g, c = self.channel_stride, self.active_chs
        for j in range(self.num_primary):
            for t in range(self.n):
                conv.weight[j * self.n + t, t * g:t * g + c] = self.weight[j]
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_chs}, primary={self.num_primary}, c_hat={self.active_chs}, g={self.channel_stride}, "
                f"n={self.n}, out={self.out_chs}, kernel_size={self.kernel_size}, stride={self.stride}")
