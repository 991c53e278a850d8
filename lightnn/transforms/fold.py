"""Fold BatchNorm into the convolution (or linear) that feeds it, for inference and export.

In eval mode BN is an affine map per channel, y = gamma (x - mu) / sqrt(var + eps) + beta, so a conv followed by
BN equals one conv with weights W' = W * s and bias b' = (b - mu) * s + beta, s = gamma / sqrt(var + eps)
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", section 3.2). Folding first means the exported graph and the int8 model quantize the weights that
are really used, and one pass over memory is saved per layer.

Pairs are found on the ``torch.fx`` graph (so any zoo model, not only ``ConvBNAct``, folds); the folded model
keeps the original module tree (the BN becomes ``nn.Identity``), so layer names in errors and reports still match
the user's model.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..models import record_edit

__all__ = ["fold_bn", "find_bn_pairs"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(producer, bn)`` module-name pairs where a Conv2d/Linear's only consumer is a BatchNorm.

    Modules called more than once (shared weights) are left alone: folding them would change the other call.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # untraceable models fall back to the ConvBNAct naming convention
        return _pairs_by_name(model)
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        producer = mods.get(prev.target)
        ok = (isinstance(producer, nn.Conv2d) and isinstance(mods[node.target], nn.BatchNorm2d)) or (
            isinstance(producer, nn.Linear) and isinstance(mods[node.target], nn.BatchNorm1d))
        if ok and calls[prev.target] == 1 and calls[node.target] == 1:
            pairs.append((prev.target, node.target))
    return pairs


def _pairs_by_name(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, m in model.named_modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            pre = f"{name}." if name else ""
            pairs.append((pre + "conv", pre + "bn"))
    return pairs


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


@torch.no_grad()
def fold_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every foldable BatchNorm merged into its producer.

    The result computes the same function as ``model.eval()`` (up to float rounding) and has no BatchNorm left
    behind a conv/linear; its model record gets the ``{"kind": "fold_bn"}`` edit, which a checkpoint replays.
    """
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    for prod_name, bn_name in find_bn_pairs(m):
        prod, bn = m.get_submodule(prod_name), m.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(prod, bn) if isinstance(prod, nn.Conv2d) else fuse_linear_bn_eval(prod, bn)
        _set(m, prod_name, fused)
        _set(m, bn_name, nn.Identity())
    return record_edit(m, {"kind": "fold_bn"})
