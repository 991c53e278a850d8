"""Load foreign (torchvision) state dicts into lightnn models.

lightnn's torchvision-shared families build the same layers as torchvision in the same order; where the names
differ (``ConvBNAct`` children ``conv/bn`` vs torchvision's ``0/1``, a flat ``classifier`` Linear vs
``classifier.1``) the tensors are paired by position. Every pair must agree in role (``weight``, ``bias``,
``running_mean``, ...) and in shape, so a checkpoint of another architecture or width cannot load silently:
the parts that do not pair up are reported as missing / unexpected keys in a :class:`CheckpointError`.
Families whose names equal torchvision's (ResNet, Inception-v3, AlexNet, VGG) load by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .record import model_name

__all__ = ["load_foreign_state_dict", "convert_state_dict"]

_WRAPPERS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def _unwrap(state_dict: Mapping, source: str) -> dict[str, torch.Tensor]:
    sd = state_dict
    for key in _WRAPPERS:  # {"state_dict": {...}} style training checkpoints
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: not a state dict (expected a mapping of names to tensors)")
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _signature(key: str, t: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    return key.rsplit(".", 1)[-1], tuple(t.shape)


def _fmt(keys: list[str], sd: Mapping[str, torch.Tensor], limit: int = 6) -> str:
    shown = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def convert_state_dict(model: nn.Module, state_dict: Mapping, source: str = "torchvision") -> dict[str, torch.Tensor]:
    """Return ``state_dict`` renamed to ``model``'s keys; raise :class:`CheckpointError` naming the keys that
    do not fit (missing in the file / unexpected in it / different shapes)."""
    theirs = _unwrap(state_dict, source)
    ours = model.state_dict()
    if set(theirs) == set(ours):  # same names: check shapes only
        bad = [k for k in ours if tuple(ours[k].shape) != tuple(theirs[k].shape)]
        if bad:
            raise CheckpointError(
                f"{source}: shapes differ from model {_name(model)} for {len(bad)} tensor(s): "
                + "; ".join(f"{k} file {tuple(theirs[k].shape)} vs model {tuple(ours[k].shape)}" for k in bad[:6]))
        return dict(theirs)
    common = set(ours) & set(theirs)
    if len(common) * 2 >= len(theirs):  # mostly the same names (e.g. another depth): report by name
        missing = [k for k in ours if k not in theirs]
        unexpected = [k for k in theirs if k not in ours]
        bad = [k for k in ours if k in common and tuple(ours[k].shape) != tuple(theirs[k].shape)]
        parts = []
        if missing:
            parts.append(f"missing: {_fmt(missing, ours)}")
        if unexpected:
            parts.append(f"unexpected: {_fmt(unexpected, theirs)}")
        if bad:
            parts.append("shapes differ: " + "; ".join(
                f"{k} file {tuple(theirs[k].shape)} vs model {tuple(ours[k].shape)}" for k in bad[:6]))
        raise CheckpointError(f"{source}: weights do not fit model {_name(model)}; " + "; ".join(parts))
    our_keys, their_keys = list(ours), list(theirs)
    a = [_signature(k, ours[k]) for k in our_keys]
    b = [_signature(k, theirs[k]) for k in their_keys]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    mapping: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    unexpected: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                mapping[our_keys[i]] = theirs[their_keys[j]]
        else:
            missing += our_keys[i1:i2]
            unexpected += their_keys[j1:j2]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing (in the model, not paired in the file): {_fmt(missing, ours)}")
        if unexpected:
            parts.append(f"unexpected (in the file, not paired in the model): {_fmt(unexpected, theirs)}")
        raise CheckpointError(f"{source}: weights do not fit model {_name(model)}; " + "; ".join(parts))
    return mapping


def _name(model: nn.Module) -> str:
    return repr(model_name(model))


def load_foreign_state_dict(model: nn.Module, state_dict: Mapping, source: str = "torchvision") -> nn.Module:
    """Load a torchvision (or any same-architecture) state dict into ``model`` in place and return the model.

    ``source`` names where the weights come from (a file path or "torchvision") in error messages.
    """
    model.load_state_dict(convert_state_dict(model, state_dict, source), strict=True)
    return model
