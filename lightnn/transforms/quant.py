"""The ``fold_bn`` and ``fake_quant`` transforms (quantization-aware training).

``fold_bn`` folds every batch norm into the conv or linear layer before it (:func:`.fold.fold_bn`); ``fake_quant``
then replaces each plain Conv2d/Linear by its fake-quantized version (:mod:`lightnn.ops.quant`). QAT records both,
in that order, so a QAT checkpoint rebuilds the fake-quantized model.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..ops.quant import QATConv2d, QATLinear
from . import register_transform
from .fold import fold_bn

__all__ = ["fake_quantize", "swap_modules"]


def swap_modules(model: nn.Module, fn: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Replace, depth first, every submodule for which ``fn`` returns a module (in place)."""
    for name, child in list(model.named_children()):
        new = fn(child)
        if new is not None:
            setattr(model, name, new)
        else:
            swap_modules(child, fn)
    return model


def _to_qat(c: nn.Module) -> nn.Module | None:
    if type(c) is nn.Conv2d:
        return QATConv2d.from_float(c)
    if type(c) is nn.Linear:
        return QATLinear.from_float(c)
    return None


def fake_quantize(model: nn.Module) -> nn.Module:
    """Replace every plain Conv2d/Linear by its fake-quantized version (in place; fold batch norm first)."""
    return swap_modules(model, _to_qat)


@register_transform("fold_bn")
def _fold_transform(model: nn.Module, spec: dict) -> nn.Module:
    return fold_bn(model, inplace=True)


@register_transform("fake_quant")
def _fake_quant_transform(model: nn.Module, spec: dict) -> nn.Module:
    return fake_quantize(model)  # the model is already folded by the preceding "fold_bn" transform
