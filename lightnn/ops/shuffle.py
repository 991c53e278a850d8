"""Channel shuffle (ShuffleNet V1) and channel split (ShuffleNet V2) as explicit modules.

They cost zero multiply-adds but real time and memory traffic, and generic tools miss them when they hide inside
a ``view -> transpose -> view``: as modules, the profiler counts their traffic, the pruner knows how they permute
channels, and the exporter sees them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError


class ChannelShuffle(nn.Module):
    """Reshape channels to (groups, C/groups), transpose, flatten: output channel j*groups + i <- input i*(C/g) + j."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        if groups < 1:
            raise LightnnError(f"ChannelShuffle: groups must be >= 1, got {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        x = x.reshape(n, g, c // g, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)

    def permutation(self, channels: int) -> torch.Tensor:
        """Index tensor ``p`` with ``out[:, k] = in[:, p[k]]``."""
        if channels % self.groups:
            raise LightnnError(f"ChannelShuffle: {channels} channels do not divide into groups={self.groups}")
        return torch.arange(channels).reshape(self.groups, channels // self.groups).t().reshape(-1)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ChannelSplit(nn.Module):
    """Split channels into two parts (first ``split`` channels, the rest); returns a tuple."""

    def __init__(self, split: int) -> None:
        super().__init__()
        if split < 1:
            raise LightnnError(f"ChannelSplit: split must be >= 1, got {split}")
        self.split = split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, : self.split], x[:, self.split:]

    def extra_repr(self) -> str:
        return f"split={self.split}"


class ChannelPermute(nn.Module):
    """A fixed channel permutation (IGC blocks): ``out[:, k] = in[:, perm[k]]``."""

    def __init__(self, perm: list[int] | torch.Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise LightnnError("ChannelPermute: perm must be a permutation of 0..C-1")
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.perm)

    def permutation(self, channels: int) -> torch.Tensor:
        return self.perm.clone()

    def extra_repr(self) -> str:
        return f"channels={len(self.perm)}"
