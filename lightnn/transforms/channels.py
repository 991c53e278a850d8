"""The ``channels`` transform: layers rebuilt keeping the listed input/output channels (structured pruning).

A spec is ``{"kind": "channels", "layers": {path: {"in": [kept input channels], "out": [kept output channels]}}}``
as :func:`lightnn.compress.channel.channel_spec` writes it; how each module type shrinks is the shrink rule
registered for it in :mod:`lightnn.graph` (so a module type taught to the pruner replays here too).
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import LightnnError
from ..graph import shrunk_module
from . import register_transform, set_module

__all__ = ["apply_channel_spec"]


def apply_channel_spec(model: nn.Module, spec: dict) -> nn.Module:
    """Replace the layers named in ``spec["layers"]`` by smaller ones keeping the listed channels (in place)."""
    layers = spec["layers"] if "layers" in spec else spec
    for path, entry in layers.items():
        try:
            m = model.get_submodule(path)
        except AttributeError:
            raise LightnnError(f"channel spec names layer {path!r}, which the model does not have") from None
        new = shrunk_module(m, entry.get("in"), entry.get("out"), path)
        if new is not None:
            set_module(model, path, new)
    # num_features is the width of the last feature map (ClassifierModel contract): the model reads it off its
    # layers (feature_width); other modules with a linear head on the pooled features: that head's input width
    if isinstance(getattr(model, "num_features", None), int):
        width = getattr(model, "feature_width", None)
        head = getattr(model, "classifier", None) or getattr(model, "fc", None)
        if callable(width):
            model.num_features = int(width())
        elif isinstance(head, nn.Linear):
            model.num_features = head.in_features
    return model


@register_transform("channels")
def _channels_transform(model: nn.Module, spec: dict) -> nn.Module:
    return apply_channel_spec(model, spec)
