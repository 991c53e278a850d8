"""Low-rank convolution: a K x K conv W (out x in K K) factored as B A with rank r, two thinner layers for one.

A is a K x K conv with r output channels, B a 1x1 conv from r to out channels (with the original bias). The
truncated SVD W = U S V^T gives the best rank-r approximation in Frobenius norm (Eckart-Young): A = S_r^(1/2) V_r^T,
B = U_r S_r^(1/2), and ||W - B A||_F^2 is the sum of the dropped squared singular values.
Cost falls from out * in K^2 to r (in K^2 + out) per output position.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError

__all__ = ["LowRankConv2d", "LowRankLinear", "svd", "svd_factors"]


def svd(weight2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, V^T) in float64 of a weight matrix."""
    return torch.linalg.svd(weight2d.detach().double(), full_matrices=False)


def svd_factors(weight2d: torch.Tensor, rank: int, usv: tuple[torch.Tensor, ...] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, A, S): W (m x n) ~ B (m x r) @ A (r x n) from the truncated SVD, and all singular values S.
    ``usv`` reuses an SVD already computed with :func:`svd`."""
    if rank < 1:
        raise LightnnError(f"low-rank: rank must be >= 1, got {rank}")
    if rank > min(weight2d.shape):
        raise LightnnError(f"low-rank: rank {rank} exceeds min{tuple(weight2d.shape)} = {min(weight2d.shape)}")
    u, s, vh = svd(weight2d) if usv is None else usv
    root = s[:rank].sqrt()
    b = (u[:, :rank] * root).to(weight2d.dtype)
    a = (root[:, None] * vh[:rank]).to(weight2d.dtype)
    return b, a, s.to(weight2d.dtype)


class LowRankConv2d(nn.Module):
    """A K x K conv with ``rank`` outputs (``first``) then a 1x1 conv to ``out_chs`` (``second``, with the bias).

    Groups are not supported (each group would need its own factorization); dilation, stride and padding are kept
    on the first conv.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int], rank: int, stride: int = 1,
                 padding: int | tuple[int, int] = 0, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        if rank < 1:
            raise LightnnError(f"LowRankConv2d: rank must be >= 1, got {rank}")
        self.rank = rank
        self.first = nn.Conv2d(in_chs, rank, kernel_size, stride, padding, dilation=dilation, bias=False)
        self.second = nn.Conv2d(rank, out_chs, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, usv: tuple[torch.Tensor, ...] | None = None) -> "LowRankConv2d":
        """Factor a trained conv by truncated SVD of its (out, in K K) weight matrix (``usv``: a precomputed
        :func:`svd` of it)."""
        if conv.groups != 1:
            raise LightnnError(f"LowRankConv2d.from_conv: grouped convs (groups={conv.groups}) are not supported")
        if not isinstance(conv.padding, (int, tuple)):
            raise LightnnError(f"LowRankConv2d.from_conv: padding mode {conv.padding!r} is not supported")
        w = conv.weight
        out_c, in_c, kh, kw = w.shape
        b, a, _ = svd_factors(w.reshape(out_c, -1), rank, usv)
        m = cls(in_c, out_c, (kh, kw), rank, conv.stride, conv.padding, conv.dilation, bias=conv.bias is not None)
        m = m.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            m.first.weight.copy_(a.reshape(rank, in_c, kh, kw))
            m.second.weight.copy_(b.reshape(out_c, rank, 1, 1))
            if conv.bias is not None:
                m.second.bias.copy_(conv.bias)
        return m


class LowRankLinear(nn.Module):
    """``Linear(in, rank)`` then ``Linear(rank, out)`` (with the bias): a rank-r fully connected layer."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if rank < 1:
            raise LightnnError(f"LowRankLinear: rank must be >= 1, got {rank}")
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, usv: tuple[torch.Tensor, ...] | None = None
                    ) -> "LowRankLinear":
        """Factor a trained linear layer by truncated SVD of its weight."""
        b, a, _ = svd_factors(linear.weight, rank, usv)
        m = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        m = m.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            m.first.weight.copy_(a)
            m.second.weight.copy_(b)
            if linear.bias is not None:
                m.second.bias.copy_(linear.bias)
        return m
