"""The ``blocks`` transform: residual blocks replaced by ``nn.Identity`` (depth pruning).

A spec is ``{"kind": "blocks", "removed": [dotted block paths]}``; which blocks may go (an identity shortcut, the
same input and output shape) is :func:`lightnn.compress.depth.removable_blocks`' business, checked when the edit is
made, not when it is replayed.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from ..errors import LightnnError
from . import register_transform, set_module

__all__ = ["remove_named_blocks"]


def remove_named_blocks(model: nn.Module, removed: Sequence[str]) -> nn.Module:
    """Replace each named submodule by ``nn.Identity`` (in place)."""
    for name in removed:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise LightnnError(f"cannot remove block {name!r}: the model has no such submodule") from None
        set_module(model, name, nn.Identity())
    return model


@register_transform("blocks")
def _blocks_transform(model: nn.Module, spec: dict) -> nn.Module:
    return remove_named_blocks(model, spec.get("removed", []))
