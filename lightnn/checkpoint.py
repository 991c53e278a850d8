"""Checkpoints that rebuild without pickled code.

A lightnn checkpoint is a ``torch.save`` dict of plain data (loaded with ``weights_only=True``)::

    {"format": "lightnn-checkpoint", "version": 1,
     "model": registry name, "arch_kwargs": {...},       # create_model(model, **arch_kwargs)
     "transforms": [{"kind": "channels", ...}, ...],       # architecture edits applied in order (pruning, low-rank)
     "state_dict": {...}, "meta": {...},                   # weights and free-form metadata (metrics, epoch)
     "train_state": {...} | absent}                        # optimizer / schedule / epoch, for resuming

Architecture edits are plain data too: a compression method registers a transform with
:func:`register_transform` (``kind -> fn(model, spec) -> model``) and appends its spec to
``model.lightnn_transforms``; :func:`load_model` replays them before loading the weights.
Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import CheckpointError, LightnnError
from .utils.io import atomic_torch_save

FORMAT = "lightnn-checkpoint"
VERSION = 1

_TRANSFORMS: dict[str, Callable[[nn.Module, dict], nn.Module]] = {}


def register_transform(kind: str):
    """Register ``fn(model, spec) -> model`` that replays an architecture edit recorded as ``spec``."""

    def wrap(fn):
        _TRANSFORMS[kind] = fn
        return fn

    return wrap


def _load_transform_providers() -> None:
    # Modules that register transforms; imported lazily so loading a plain checkpoint stays cheap.
    import importlib

    for mod in ("lightnn.compress.channel", "lightnn.compress.depth", "lightnn.compress.lowrank", "lightnn.export.qat"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def apply_transforms(model: nn.Module, transforms: list[dict]) -> nn.Module:
    if transforms:
        _load_transform_providers()
    for spec in transforms:
        kind = spec.get("kind")
        if kind not in _TRANSFORMS:
            raise CheckpointError(f"checkpoint needs architecture transform {kind!r}, which this lightnn does not know")
        model = _TRANSFORMS[kind](model, spec)
    return model


def checkpoint_dict(model: nn.Module, *, meta: dict | None = None, train_state: dict | None = None) -> dict:
    name = getattr(model, "lightnn_name", None)
    if name is None:
        raise LightnnError(
            "model has no registry name (build it with lightnn.create_model) so its checkpoint could not be rebuilt"
        )
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "arch_kwargs": dict(getattr(model, "lightnn_args", {})),
        "transforms": list(getattr(model, "lightnn_transforms", [])),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, meta: dict | None = None,
                    train_state: dict | None = None) -> Path:
    """Write ``model`` (registry name, architecture arguments, transforms, weights) atomically to ``path``."""
    unwrapped = getattr(model, "module", model)  # DDP
    return atomic_torch_save(checkpoint_dict(unwrapped, meta=meta, train_state=train_state), path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file as plain data; raises :class:`CheckpointError` with the path on any problem."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory, not a file")
    import zipfile

    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else is not a checkpoint
        raise CheckpointError(f"{str(p)!r} is not a PyTorch checkpoint (expected a torch.save zip archive; "
                              f"an .onnx or .lnz file goes to the commands that take those)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickled code
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return obj


def is_lightnn_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def model_from_checkpoint_dict(ckpt: dict, **overrides: Any) -> nn.Module:
    from .models import create_model

    args = dict(ckpt.get("arch_kwargs", {}))
    args.update(overrides)
    model = create_model(ckpt["model"], **args)
    model = apply_transforms(model, ckpt.get("transforms", []))
    model.lightnn_transforms = list(ckpt.get("transforms", []))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit model {ckpt['model']!r}: {str(e).splitlines()[0][:300]}") from None
    return model


def load_model(path: str | os.PathLike, name: str | None = None, **overrides: Any) -> nn.Module:
    """Rebuild a model from a lightnn checkpoint, or load a torchvision state dict into ``name``.

    For a lightnn checkpoint, ``name`` (if given) must match the stored one, and ``overrides`` replace stored
    architecture arguments (``num_classes=1000``/``in_chans=3`` defaults are ignored when they equal the default).
    """
    obj = read_checkpoint(path)
    if is_lightnn_checkpoint(obj):
        if name is not None and name != obj["model"]:
            raise CheckpointError(f"checkpoint {str(path)!r} holds model {obj['model']!r}, not {name!r}")
        stored = obj.get("arch_kwargs", {})
        ov = {k: v for k, v in overrides.items() if not (k in ("num_classes", "in_chans") and k in stored
                                                           and v == {"num_classes": 1000, "in_chans": 3}[k])}
        return model_from_checkpoint_dict(obj, **ov)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if name is None:
            raise CheckpointError(f"{str(path)!r} is a bare state dict: name the architecture it belongs to")
        from .models import create_model
        from .models.convert import load_foreign_state_dict

        model = create_model(name, **overrides)
        load_foreign_state_dict(model, obj, source=str(path))
        return model
    raise CheckpointError(f"{str(path)!r} is neither a lightnn checkpoint nor a state dict")


def load_any(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Load a model from any file lightnn writes: a checkpoint (``.pt``) or a Deep Compression file (``.lnz``)."""
    p = Path(path)
    if p.suffix == ".lnz":
        from .compress import load as load_compressed

        return load_compressed(p)
    return load_model(p, **overrides)
