"""Activations used by efficient CNNs, and a name -> module factory so blocks can take ``act="hswish"``."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LightnnError


class Swish(nn.Module):
    """swish(x) = x * sigmoid(x) (a.k.a. SiLU; Ramachandran et al. 2017)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class HSigmoid(nn.Module):
    """h-sigmoid(x) = ReLU6(x + 3) / 6 (MobileNetV3): a piecewise-linear sigmoid that quantizes well."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardsigmoid(x)


class HSwish(nn.Module):
    """h-swish(x) = x * ReLU6(x + 3) / 6 (MobileNetV3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x)


_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "swish": Swish,
    "silu": Swish,
    "hswish": HSwish,
    "hard_swish": HSwish,
    "hsigmoid": HSigmoid,
    "hard_sigmoid": HSigmoid,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "none": nn.Identity,
}


def get_act(act: str | type[nn.Module] | Callable[[], nn.Module] | None) -> nn.Module:
    """Build an activation from a name ('relu', 'relu6', 'swish', 'hswish', 'hsigmoid', ...), a class, or None."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        try:
            return _ACTS[act.lower()]()
        except KeyError:
            raise LightnnError(f"unknown activation {act!r}; choose from {sorted(_ACTS)}") from None
    return act()
