"""The model registry: one name -> one builder function.

A builder is a plain function ``fn(*, num_classes=1000, in_chans=3, **arch_kwargs) -> nn.Module`` decorated with
:func:`register_model`. :func:`create_model` records the registry name and the architecture arguments on the model
in the model's :class:`~lightnn.models.ModelRecord` (``model.lightnn_record``) so that checkpoints can rebuild it
without pickled code; dataclass arguments (the rows of an ``ir_net`` table) are recorded as dicts of their fields.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from ..errors import LightnnError, UnknownModelError

__all__ = ["register_model", "create_model", "list_models", "model_info", "is_model", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, int, int]  # (C, H, W) the model was designed for
    test_input_size: tuple[int, int, int]  # smallest convenient input for fast tests
    paper: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    input_size: tuple[int, int, int] = (3, 224, 224),
    test_input_size: tuple[int, int, int] | None = None,
    paper: str = "",
    tags: tuple[str, ...] = (),
):
    """Register a builder under ``name`` (default: the function's name). Duplicate names raise."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY:
            raise LightnnError(f"model name {key!r} is registered twice ({_REGISTRY[key].fn.__module__} and {f.__module__})")
        family = f.__module__.rsplit(".", 1)[-1]
        tis = test_input_size or ((input_size[0], 32, 32) if input_size[1] <= 32 else (input_size[0], 64, 64))
        _REGISTRY[key] = ModelInfo(key, f, family, tuple(input_size), tuple(tis), paper, tuple(tags))
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the package registers every family.
    from . import _families  # noqa: F401


def list_models(pattern: str | list[str] = "*") -> list[str]:
    """Sorted registry names matching a shell-style wildcard (or any of several)."""
    _ensure_loaded()
    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in _REGISTRY if any(fnmatch.fnmatchcase(n, p) for p in pats))


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(sorted(close))}" if close else ""
        raise UnknownModelError(f"unknown model name {name!r} (see `lightnn list`{hint})") from None


def _plain(value: Any) -> Any:
    """``value`` with dataclass instances as dicts of their fields, inside lists, tuples and dicts too: a checkpoint's
    ``arch_kwargs`` must load with ``torch.load(weights_only=True)``, which refuses pickled classes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # not a namedtuple: those keep their type
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# The checkpoint reader sits above the registry (it builds models through it), so it registers itself here rather
# than being imported: ``load(path, name=..., **arch_kwargs) -> model``.
_CHECKPOINT_LOADER: Callable[..., nn.Module] | None = None


def set_checkpoint_loader(loader: Callable[..., nn.Module]) -> None:
    """Called by :mod:`lightnn.checkpoint`: how ``create_model(name, checkpoint=path)`` loads ``path``."""
    global _CHECKPOINT_LOADER
    _CHECKPOINT_LOADER = loader


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int | None = None,
    checkpoint: str | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``checkpoint`` may be a lightnn checkpoint (its stored architecture arguments are used, then overridden by
    any given here) or a torchvision state-dict file of the same architecture.
    """
    if checkpoint is not None:
        if _CHECKPOINT_LOADER is None:  # lightnn/__init__ imports lightnn.checkpoint, which registers it
            raise LightnnError("create_model(checkpoint=...) needs lightnn.checkpoint, which has not been imported")
        chans = {} if in_chans is None else {"in_chans": in_chans}
        return _CHECKPOINT_LOADER(checkpoint, name=name, num_classes=num_classes, **chans, **arch_kwargs)
    info = model_info(name)
    if in_chans is None:  # the channels the model was designed for (3; 1 for the MNIST LeNets)
        in_chans = info.input_size[0]
    sig = inspect.signature(info.fn)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in arch_kwargs if k not in sig.parameters and not accepts_any]
    if unknown:
        allowed = [k for k in sig.parameters if k not in ("num_classes", "in_chans")]
        raise LightnnError(f"model {name!r} does not take argument(s) {unknown}; it takes {allowed}")
    if num_classes < 1:
        raise LightnnError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise LightnnError(f"in_chans must be >= 1, got {in_chans}")
    try:
        model = info.fn(num_classes=num_classes, in_chans=in_chans, **arch_kwargs)
    except TypeError as e:  # a builder forwarding **kwargs met an argument nobody takes
        msg = str(e)
        if "got multiple values for" in msg:  # e.g. width_mult given to a name that fixes its width
            arg = msg.rsplit("argument", 1)[-1].strip(" '\"")
            raise LightnnError(f"model {name!r} fixes {arg!r} itself, so it cannot be given; pick the name with the "
                               f"{arg} you want, or a family builder that takes it") from None
        if "unexpected keyword argument" not in msg:
            raise
        raise LightnnError(f"model {name!r} does not take argument(s) {sorted(arch_kwargs)}: {e}") from None
    if "default_input_size" not in vars(model):  # a class-level default must not hide the registered size
        model.default_input_size = (in_chans, *info.input_size[1:])
    from .record import ModelRecord, set_record  # record.py validates names against this registry

    return set_record(model, ModelRecord(name, {"num_classes": num_classes, "in_chans": in_chans,
                                                **_plain(arch_kwargs)}))
