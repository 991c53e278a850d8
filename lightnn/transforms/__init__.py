"""Architecture edits as data: every edit a compression method makes is a spec (a plain dict with a ``kind``)
plus a pure ``apply(model, spec) -> model`` registered here, so a checkpoint stores only specs and any lightnn
rebuilds the edited architecture by replaying them (:func:`apply_transforms`) before loading the weights.

Built-in kinds, each in its own module of this package:

- ``channels`` (:mod:`.channels`): layers rebuilt with the kept input/output channel indices (structured pruning);
- ``blocks`` (:mod:`.blocks`): residual blocks replaced by ``nn.Identity`` (depth pruning);
- ``lowrank`` (:mod:`.lowrank`): Conv2d/Linear layers replaced by two thin factors of a given rank;
- ``fold_bn`` and ``fake_quant`` (:mod:`.fold`, :mod:`.quant`): batch norm folded, then Conv2d/Linear replaced by
  their fake-quantized versions (quantization-aware training).

A new edit registers itself with ``@register_transform("kind")``; the layer sits below ``compress``, ``export``
and ``train`` (it imports only ``models``, ``ops``, ``graph`` and ``errors``), so loading a checkpoint never reaches
up into the code that made the edit. :func:`apply_transforms` appends each spec it replays to the model's record.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch.nn as nn

from ..errors import CheckpointError, LightnnError
from ..models import ModelRecord, record_of, set_record

__all__ = ["register_transform", "apply_transforms", "transform_kinds", "get_transform", "set_module"]

Transform = Callable[[nn.Module, dict], nn.Module]
_TRANSFORMS: dict[str, Transform] = {}


def register_transform(kind: str, *, replace: bool = False) -> Callable[[Transform], Transform]:
    """Register ``fn(model, spec) -> model`` as the replay of the architecture edit ``kind``.

    A second registration of the same kind is refused unless ``replace=True`` (two providers silently fighting
    over one kind would make checkpoints load differently depending on import order)."""
    if not isinstance(kind, str) or not kind:
        raise LightnnError(f"a transform kind must be a non-empty string, got {kind!r}")

    def wrap(fn: Transform) -> Transform:
        if kind in _TRANSFORMS and _TRANSFORMS[kind] is not fn and not replace:
            raise LightnnError(f"transform kind {kind!r} is already registered (by {_TRANSFORMS[kind].__module__}."
                               f"{_TRANSFORMS[kind].__qualname__}); pass replace=True to override it")
        _TRANSFORMS[kind] = fn
        return fn

    return wrap


def transform_kinds() -> list[str]:
    """The registered transform kinds, sorted."""
    return sorted(_TRANSFORMS)


def get_transform(kind: str) -> Transform:
    try:
        return _TRANSFORMS[kind]
    except KeyError:
        raise CheckpointError(f"{kind!r} is not an architecture transform this lightnn knows "
                              f"(known: {', '.join(transform_kinds())})") from None


def apply_transforms(model: nn.Module, transforms: Iterable[Mapping]) -> nn.Module:
    """Replay recorded architecture edits in order (each spec a mapping with a ``kind``); the model's record
    gets them appended (whatever the registered functions record themselves)."""
    rec = record_of(model) or ModelRecord(None)
    for i, spec in enumerate(transforms):
        if not isinstance(spec, Mapping):
            raise CheckpointError(f"transform #{i} is a {type(spec).__name__}, not a mapping with a 'kind'")
        kind = spec.get("kind")
        if kind not in _TRANSFORMS:
            raise CheckpointError(f"transform #{i} {kind!r} is not an architecture transform this lightnn knows "
                                  f"(known: {', '.join(transform_kinds())})")
        model = _TRANSFORMS[kind](model, dict(spec))
        rec = rec.with_transform(spec)
    return set_record(model, rec)


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` by ``new``."""
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)


# the built-in providers register their kinds on import
from . import blocks, channels, lowrank, quant  # noqa: E402,F401
