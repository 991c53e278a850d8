"""Inception factorizations (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, section 3).

- A 5x5 conv equals in receptive field two stacked 3x3 convs: (9 + 9) / 25 = 72% of the MACs, i.e. 28% fewer
  (section 3.1, Figure 1) when the intermediate width equals the output width.
- An n x n conv factorizes into 1 x n then n x 1 (asymmetric, section 3.2): 2n / n^2 of the cost, 33% fewer for
  n = 3 (Figure 3).

Each conv here is a Conv-BN-ReLU unit, as in Inception-v3; ``bn=False, act=None`` leaves plain linear convs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError
from .conv import ActLike, ConvBNAct

__all__ = ["Factorized5x5", "FactorizedNxN"]


class Factorized5x5(nn.Module):
    """Two stacked 3x3 convs in place of one 5x5 (same 5x5 receptive field). ``mid_chs`` defaults to ``out_chs``;
    the stride is taken by the first conv."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int | None = None, stride: int = 1,
                 act: ActLike = "relu", bn: bool = True) -> None:
        super().__init__()
        mid = out_chs if mid_chs is None else mid_chs
        self.conv1 = ConvBNAct(in_chs, mid, 3, stride, act=act, bn=bn)
        self.conv2 = ConvBNAct(mid, out_chs, 3, 1, act=act, bn=bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FactorizedNxN(nn.Module):
    """A 1 x n conv then an n x 1 conv in place of an n x n conv (asymmetric factorization).

    ``order="1xn-nx1"`` (default) or ``"nx1-1xn"``; ``mid_chs`` defaults to ``out_chs``.
    """

    def __init__(self, in_chs: int, out_chs: int, n: int = 3, mid_chs: int | None = None,
                 order: str = "1xn-nx1", act: ActLike = "relu", bn: bool = True) -> None:
        super().__init__()
        if n < 2 or n % 2 == 0:
            raise LightnnError(f"FactorizedNxN: n must be an odd kernel size >= 3 (for 'same' padding), got {n}")
        if order not in ("1xn-nx1", "nx1-1xn"):
            raise LightnnError(f"FactorizedNxN: order must be '1xn-nx1' or 'nx1-1xn', got {order!r}")
        mid = out_chs if mid_chs is None else mid_chs
        k1, k2 = ((1, n), (n, 1)) if order == "1xn-nx1" else ((n, 1), (1, n))
        self.n = n
        self.conv1 = ConvBNAct(in_chs, mid, k1, act=act, bn=bn)
        self.conv2 = ConvBNAct(mid, out_chs, k2, act=act, bn=bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))
