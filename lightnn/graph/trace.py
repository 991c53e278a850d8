"""Tracing for the channel analysis: ``torch.fx`` with every module type that has a coupling rule kept as a leaf
(its channel map is known, its insides need not be), then one shape-propagating run with the example input."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedOpError
from .registry import module_rule

__all__ = ["ChannelTracer", "trace_with_shapes"]


class ChannelTracer(fx.Tracer):
    """An fx tracer that stops at modules with a registered coupling rule (and at torch.nn modules, as fx does)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return module_rule(type(m)) is not None or super().is_leaf_module(m, qualname)


def trace_with_shapes(model: nn.Module, inputs: Sequence[torch.Tensor]) -> fx.GraphModule:
    """Trace ``model`` (train mode, so train-only branches such as Inception's aux head are in the graph) and
    record every node's ``tensor_meta`` from one eval-mode run (BN running statistics stay untouched)."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        try:
            graph = ChannelTracer().trace(model)
        except Exception as e:
            first = (str(e).splitlines() or [""])[0][:200]
            raise UnsupportedOpError(f"channel pruning needs a torch.fx-traceable model; tracing "
                                     f"{type(model).__name__} failed: {type(e).__name__}: {first}") from None
        gm = fx.GraphModule(model, graph)
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        for m, t in modes.items():
            m.training = t
    return gm
