"""The model record: what a model is, apart from its weights, as one small frozen value carried by the model.

A :class:`ModelRecord` holds everything that rebuilds and uses a model apart from its weights: the registry
``name`` and ``arch_kwargs`` (``create_model(name, **arch_kwargs)``), the architecture edits applied since
(``transforms``, plain-data specs replayed by :mod:`lightnn.transforms`), the ``input_size`` it takes, the input
``normalize`` statistics it was trained with (:class:`~lightnn.data.Normalization`), its ``classes`` and its
``metrics``.

``name`` is None for a module lightnn did not build but did edit (a user's own network pruned by
:func:`lightnn.compress.prune_channels`): its record holds the edits, so they replay on a fresh instance, but it
cannot be saved as a rebuildable file (that needs a registry name).

:func:`~lightnn.models.create_model` gives every model it builds its record, and every lightnn edit gives the edited
model the next one (:func:`record_edit`); a record never changes, edits make new ones. A model carries it as the
one attribute ``model.lightnn_record``; read it with :func:`record_of`, set it with :func:`set_record`. The file
side (``lightnn.save`` / ``lightnn.load``, ``.pt`` and ``.lnz``) is :mod:`lightnn.record`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch.nn as nn

from ..data.normalize import Normalization
from ..errors import CheckpointError, LightnnError
from ._registry import is_model, model_info

__all__ = ["ModelRecord", "record_of", "set_record", "record_edit", "record_update", "model_name",
           "model_normalization"]

_ATTR = "lightnn_record"


@dataclass(frozen=True)
class ModelRecord:
    """What rebuilds and describes a model, apart from its weights (see the module docstring)."""

    name: str | None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transforms: tuple[Mapping[str, Any], ...] = ()
    input_size: tuple[int, int, int] | None = None
    normalize: Normalization | None = None
    classes: tuple[str, ...] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not is_model(self.name)):
            raise LightnnError(f"model record: name {self.name!r} is not a registered model (see `lightnn list`)")
        if not isinstance(self.arch_kwargs, Mapping):
            raise LightnnError(f"model record: arch_kwargs must be a mapping, got {type(self.arch_kwargs).__name__}")
        specs = tuple(self.transforms)
        if not all(isinstance(t, Mapping) and isinstance(t.get("kind"), str) for t in specs):
            raise LightnnError("model record: every transform must be a mapping with a 'kind'")
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs))
        object.__setattr__(self, "transforms", tuple(dict(t) for t in specs))
        object.__setattr__(self, "normalize", Normalization.of(self.normalize))
        if self.input_size is not None:
            size = tuple(self.input_size)
            if len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
                raise LightnnError(f"model record: input_size must be (C, H, W) positive integers, got {size!r}")
            object.__setattr__(self, "input_size", size)
        if self.classes is not None:
            if not all(isinstance(c, str) for c in self.classes):
                raise LightnnError("model record: classes must be strings")
            object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.metrics, Mapping):
            raise LightnnError(f"model record: metrics must be a mapping, got {type(self.metrics).__name__}")
        object.__setattr__(self, "metrics", dict(self.metrics))

    # -- derived records (a record never changes; edits make new ones) --------------------------------------------

    def replace(self, **changes: Any) -> "ModelRecord":
        return dataclasses.replace(self, **changes)

    def with_transform(self, spec: Mapping[str, Any]) -> "ModelRecord":
        """The record of the model after one more architecture edit ``spec``."""
        return self.replace(transforms=(*self.transforms, dict(spec)))

    @property
    def resolved_input_size(self) -> tuple[int, int, int]:
        """``input_size``, or the registry's for ``name`` when none was recorded."""
        if self.input_size is None and self.name is None:
            raise LightnnError("model record: no input size recorded and no registry name to look one up")
        return self.input_size or model_info(self.name).input_size

    @classmethod
    def of(cls, model: nn.Module, **fields: Any) -> "ModelRecord":
        """The record ``model`` carries (built by :func:`lightnn.create_model`, edited by lightnn), with ``fields``
        set or overridden (``classes=``, ``metrics=`` ...)."""
        rec = record_of(model)
        if rec is None:
            raise LightnnError(f"{type(getattr(model, 'module', model)).__name__} has no model record (build it with "
                               f"lightnn.create_model), so nothing can rebuild it")
        return rec.replace(**fields) if fields else rec

    # -- file side ----------------------------------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        """The fields a file stores to rebuild the architecture: ``model``, ``arch_kwargs``, ``transforms``."""
        return {"model": self.name, "arch_kwargs": dict(self.arch_kwargs),
                "transforms": [dict(t) for t in self.transforms]}

    def meta(self) -> dict[str, Any]:
        """The record's part of a file's metadata (plain data)."""
        out: dict[str, Any] = {}
        if self.input_size is not None:
            out["input_size"] = list(self.input_size)
        if self.normalize is not None:
            out["normalize"] = self.normalize.to_dict()
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out

    @classmethod
    def from_file_fields(cls, arch: Mapping[str, Any], meta: Mapping[str, Any], source: str) -> "ModelRecord":
        """The record of a file's architecture fields (``model``, ``arch_kwargs``, ``transforms``) and metadata;
        a field a reader would refuse is a :class:`~lightnn.errors.CheckpointError` naming ``source``."""
        meta = meta if isinstance(meta, Mapping) else {}
        if not isinstance(arch.get("model"), str):
            raise CheckpointError(f"{source}: model record: no registry name (field 'model')")
        try:
            return cls(name=arch["model"], arch_kwargs=arch.get("arch_kwargs") or {},
                       transforms=tuple(arch.get("transforms") or ()),
                       input_size=tuple(meta["input_size"]) if meta.get("input_size") else None,
                       normalize=meta.get("normalize") or None,
                       classes=tuple(meta["classes"]) if meta.get("classes") else None,
                       metrics=meta.get("metrics") or {})
        except (LightnnError, TypeError, KeyError) as e:
            raise CheckpointError(f"{source}: model record: {e}") from None


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP / DataParallel


def record_of(model: nn.Module) -> ModelRecord | None:
    """The record ``model`` carries (looking through a DDP wrapper), or None for a module lightnn did not build."""
    rec = getattr(_unwrap(model), _ATTR, None)
    return rec if isinstance(rec, ModelRecord) else None


def set_record(model: nn.Module, record: ModelRecord | None) -> nn.Module:
    """Give ``model`` (through a DDP wrapper) ``record``; None removes it. Returns the model."""
    target = _unwrap(model)
    if record is None:
        target.__dict__.pop(_ATTR, None)
    elif not isinstance(record, ModelRecord):
        raise LightnnError(f"set_record: expected a ModelRecord, got {type(record).__name__}")
    else:
        setattr(target, _ATTR, record)
    return model


def record_edit(model: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """Record one more architecture edit ``spec`` on ``model``'s record (a module without one gets a record with no
    registry name, holding its edits). Returns the model."""
    rec = record_of(model) or ModelRecord(None)
    return set_record(model, rec.with_transform(spec))


def record_update(model: nn.Module, **changes: Any) -> nn.Module:
    """Replace fields of ``model``'s record (``normalize=``, ``classes=`` ...); a module without one gets a record
    with no registry name. Returns the model."""
    rec = record_of(model) or ModelRecord(None)
    return set_record(model, rec.replace(**changes))


def model_normalization(model: nn.Module) -> dict[str, list[float]] | None:
    """The input normalization ``model``'s record holds, as ``{"mean": [...], "std": [...]}``; None when unknown."""
    rec = record_of(model)
    return rec.normalize.to_dict() if rec is not None and rec.normalize is not None else None


def model_name(model: nn.Module, default: str | None = None) -> str:
    """The registry name of ``model``; else ``default``, or the class name when ``default`` is None."""
    rec = record_of(model)
    if rec is not None and rec.name is not None:
        return rec.name
    return default if default is not None else type(_unwrap(model)).__name__
