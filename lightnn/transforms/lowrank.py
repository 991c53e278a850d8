"""The ``lowrank`` transform: Conv2d/Linear layers replaced by two thin factors of a given rank.

A spec is ``{"kind": "lowrank", "ranks": {layer path: rank}}``; replaying it rebuilds the factored layers' shapes
(the weights come from the checkpoint's state dict; :func:`lightnn.compress.lowrank.factorize` computes them by
truncated SVD when the edit is made).
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import LightnnError
from ..ops.lowrank import LowRankConv2d, LowRankLinear
from . import register_transform, set_module

__all__ = ["replay_lowrank"]


@register_transform("lowrank")
def replay_lowrank(model: nn.Module, spec: dict) -> nn.Module:
    """Rebuild the factored layers' shapes (weights come from the checkpoint's state dict)."""
    for name, r in spec.get("ranks", {}).items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise LightnnError(f"low-rank transform: model has no layer {name!r}") from None
        if isinstance(m, nn.Conv2d):
            new = LowRankConv2d(m.in_channels, m.out_channels, m.kernel_size, int(r), m.stride, m.padding,
                                m.dilation, bias=m.bias is not None)
        elif isinstance(m, nn.Linear):
            new = LowRankLinear(m.in_features, m.out_features, int(r), bias=m.bias is not None)
        else:
            raise LightnnError(f"low-rank transform: layer {name!r} is a {type(m).__name__}, not Conv2d/Linear")
        set_module(model, name, new.to(device=m.weight.device, dtype=m.weight.dtype))
    return model
