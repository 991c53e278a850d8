"""Fake quantization primitives for quantization-aware training: int8 per-channel symmetric weights and uint8
affine activations, each with a straight-through gradient, and the Conv2d/Linear layers that apply them.

The ranges match what ONNX Runtime's static int8 (QDQ) kernels use, so a fake-quantized model predicts what its
int8 export computes (:func:`lightnn.export.export_qat_int8`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["fake_quant_weight", "fake_quant_act", "ActRange", "QATConv2d", "QATLinear"]


def fake_quant_weight(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization with a straight-through gradient."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / qmax
    scale = scale.view(-1, *([1] * (w.dim() - 1)))
    wq = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return w + (wq - w).detach()


def fake_quant_act(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Affine (asymmetric, unsigned) fake quantization of ``x`` to [lo, hi]; zero is exactly representable."""
    qmax = 2 ** bits - 1
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / qmax).clamp_min(1e-8)
    zp = torch.clamp(torch.round(-lo / scale), 0, qmax)
    q = torch.clamp(torch.round(x / scale) + zp, 0, qmax)
    xq = (q - zp) * scale
    inside = (x >= (0 - zp) * scale) & (x <= (qmax - zp) * scale)
    # STE: identity gradient inside the range, none for clipped values
    return torch.where(inside, x + (xq - x).detach(), xq.detach())


class ActRange(nn.Module):
    """EMA of the batch min/max of a tensor (updated in training), used as its uint8 range."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                lo, hi = x.detach().min(), x.detach().max()
                if int(self.seen) == 0:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                else:
                    self.lo.lerp_(lo, self.momentum)
                    self.hi.lerp_(hi, self.momentum)
                self.seen += 1
        if int(self.seen) == 0:  # never observed: pass through (calibration fills it)
            return x
        return fake_quant_act(x, self.lo, self.hi)


class QATConv2d(nn.Conv2d):
    """``nn.Conv2d`` that fake-quantizes its input (uint8 affine) and its weight (int8 per-channel symmetric)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act_range = ActRange()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_range(x), fake_quant_weight(self.weight), self.bias)

    @classmethod
    def from_float(cls, m: nn.Conv2d) -> "QATConv2d":
        q = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                bias=True, padding_mode=m.padding_mode)
        with torch.no_grad():
            q.weight.copy_(m.weight)
            q.bias.copy_(m.bias if m.bias is not None else torch.zeros(m.out_channels))
        return q


class QATLinear(nn.Linear):
    """``nn.Linear`` with the same fake quantization as :class:`QATConv2d`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act_range = ActRange()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_range(x), fake_quant_weight(self.weight), self.bias)

    @classmethod
    def from_float(cls, m: nn.Linear) -> "QATLinear":
        q = cls(m.in_features, m.out_features, bias=True)
        with torch.no_grad():
            q.weight.copy_(m.weight)
            q.bias.copy_(m.bias if m.bias is not None else torch.zeros(m.out_features))
        return q
