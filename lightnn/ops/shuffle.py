"""Channel shuffle (ShuffleNet V1) and channel split (ShuffleNet V2) as explicit modules.

They cost zero multiply-adds but real time and memory traffic, and generic tools miss them when they hide inside
a ``view -> transpose -> view``: as modules, the profiler counts their traffic, the pruner knows how they permute
channels, and the exporter sees them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LightnnError


def shuffle_by_views(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle of an (N, C, H, W) tensor by reshape -> transpose -> reshape (any device)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Reshape channels to (groups, C/groups), transpose, flatten: output channel j*groups + i <- input i*(C/g) + j."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        if groups < 1:
            raise LightnnError(f"ChannelShuffle: groups must be >= 1, got {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One native op (aten.channel_shuffle has CPU and CUDA kernels) instead of reshape -> transpose -> reshape,
        # three Python-level calls: about half the time at batch 1, the same values and gradients.
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return shuffle_by_views(x, self.groups)  # ONNX has no channel_shuffle op: export the views
        try:
            return torch.channel_shuffle(x, self.groups)
        except NotImplementedError:  # a backend without the kernel (MPS, ...): the same permutation by views
            return shuffle_by_views(x, self.groups)

    def permutation(self, channels: int) -> torch.Tensor:
        """Index tensor ``p`` with ``out[:, k] = in[:, p[k]]``."""
        if channels % self.groups:
            raise LightnnError(f"ChannelShuffle: {channels} channels do not divide into groups={self.groups}")
        # an explicit CPU index, so a model built under ``torch.device("meta")`` (size checks) can still read it
        return torch.arange(channels, device="cpu").reshape(self.groups, channels // self.groups).t().reshape(-1)

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
        # = (x[:, :split], x[:, split:]): the same two slice views from one call instead of two indexing calls
        return x.tensor_split((self.split,), 1)

    def extra_repr(self) -> str:
        return f"split={self.split}"


class ChannelPermute(nn.Module):
    """A fixed channel permutation (IGC blocks): ``out[:, k] = in[:, perm[k]]``."""

    def __init__(self, perm: list[int] | torch.Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long, device="cpu")  # readable under torch.device("meta") too
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise LightnnError("ChannelPermute: perm must be a permutation of 0..C-1")
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.perm)

    def permutation(self, channels: int) -> torch.Tensor:
        return self.perm.clone()

    def extra_repr(self) -> str:
        return f"channels={len(self.perm)}"
