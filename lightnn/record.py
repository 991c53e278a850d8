"""The model record: what a saved model is, as one small frozen value, and ``save`` / ``load`` for every format.

A :class:`ModelRecord` holds everything that rebuilds and uses a model apart from its weights: the registry
``name`` and ``arch_kwargs`` (``create_model(name, **arch_kwargs)``), the architecture edits applied since
(``transforms``, plain-data specs replayed by :mod:`lightnn.transforms`), the ``input_size`` it takes, the input
``normalize`` statistics it was trained with (:class:`~lightnn.data.Normalization`), its ``classes`` and its
``metrics``. It is stored next to the weights, in a ``.pt`` checkpoint and a ``.lnz`` file alike::

    model, record = lightnn.load("runs/r20/model.pt")            # or a .lnz file
    pruned = prune(model)                                         # any architecture edit ...
    lightnn.save("pruned.pt", pruned, record.with_transform(spec))   # ... recorded as data

Files written by earlier lightnn versions (format version 1, whose normalization and classes sit in free-form
metadata) load into the same record. Writes are atomic; reads verify the file (see :mod:`lightnn.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from .checkpoint import is_lightnn_checkpoint, load_any, model_from_checkpoint_dict, read_checkpoint, save_checkpoint
from .data.normalize import Normalization
from .errors import CheckpointError, LightnnError
from .models import create_model, is_model, model_info
from .transforms import apply_transforms

__all__ = ["ModelRecord", "save", "load"]

# metadata keys the record owns; everything else in a file's metadata is passed through untouched
_RECORD_META = ("input_size", "normalize", "classes", "metrics")


@dataclass(frozen=True)
class ModelRecord:
    """What rebuilds and describes a model, apart from its weights (see the module docstring)."""

    name: str
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    transforms: tuple[Mapping[str, Any], ...] = ()
    input_size: tuple[int, int, int] | None = None
    normalize: Normalization | None = None
    classes: tuple[str, ...] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not is_model(self.name):
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
        return self.input_size or model_info(self.name).input_size

    # -- model side ---------------------------------------------------------------------------------------------

    def build(self) -> nn.Module:
        """A freshly initialized model of this architecture (transforms replayed; weights are the caller's)."""
        model = apply_transforms(create_model(self.name, **self.arch_kwargs), self.transforms)
        return self.attach(model)

    def attach(self, model: nn.Module) -> nn.Module:
        """Give ``model`` the registry attributes the rest of lightnn still reads (name, arguments, transforms,
        normalization), so a model handed on from here behaves as one built by :func:`lightnn.create_model`."""
        model.lightnn_name = self.name
        model.lightnn_args = dict(self.arch_kwargs)
        model.lightnn_transforms = [dict(t) for t in self.transforms]
        if self.normalize is not None:
            model.lightnn_normalize = self.normalize.to_dict()
        return model

    @classmethod
    def of(cls, model: nn.Module, **fields: Any) -> "ModelRecord":
        """The record of a model built by :func:`lightnn.create_model` (and edited by lightnn), from the registry
        attributes it carries; ``fields`` set or override the rest (``classes=``, ``metrics=`` ...)."""
        model = getattr(model, "module", model)  # DDP
        name = getattr(model, "lightnn_name", None)
        if name is None:
            raise LightnnError("model has no registry name (build it with lightnn.create_model), so no record "
                               "can rebuild it")
        base: dict[str, Any] = {"name": name, "arch_kwargs": getattr(model, "lightnn_args", {}),
                                "transforms": tuple(getattr(model, "lightnn_transforms", ())),
                                "normalize": getattr(model, "lightnn_normalize", None)}
        base.update(fields)
        return cls(**base)

    # -- file side ----------------------------------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
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
        """The record of a file's architecture fields (``model``, ``arch_kwargs``, ``transforms``) and metadata."""
        meta = meta if isinstance(meta, Mapping) else {}
        try:
            return cls(name=arch["model"], arch_kwargs=arch.get("arch_kwargs", {}),
                       transforms=tuple(arch.get("transforms", ())),
                       input_size=tuple(meta["input_size"]) if meta.get("input_size") else None,
                       normalize=meta.get("normalize") or None,
                       classes=tuple(meta["classes"]) if meta.get("classes") else None,
                       metrics=meta.get("metrics") or {})
        except LightnnError as e:
            raise CheckpointError(f"{source}: {e}") from None


def save(path: str | os.PathLike, model: nn.Module, record: ModelRecord | None = None, *,
         meta: Mapping[str, Any] | None = None, **lnz_options: Any) -> Path:
    """Write ``model``'s weights with ``record`` (default: :meth:`ModelRecord.of` the model) to ``path``.

    ``.pt``: a verified checkpoint (:func:`lightnn.checkpoint.save_checkpoint`). ``.lnz``: the Deep Compression
    format (sparse, shared and Huffman-coded where the weights allow; ``lnz_options`` go to
    :func:`lightnn.compress.save_lnz`). ``meta`` adds free-form metadata next to the record's."""
    p = Path(path)
    record = record or ModelRecord.of(model)
    full_meta = {**dict(meta or {}), **record.meta()}
    if p.suffix == ".lnz":
        from .compress.fileformat import save_lnz  # the format's writer sits in compress, above this module

        save_lnz(p, model, meta=full_meta, architecture=record.architecture(), **lnz_options)
        return p
    if lnz_options:
        raise LightnnError(f"save: options {sorted(lnz_options)} apply to .lnz files only, not {str(p)!r}")
    return save_checkpoint(p, model, meta=full_meta, architecture=record.architecture())


def load(path: str | os.PathLike) -> tuple[nn.Module, ModelRecord]:
    """Read a model saved by lightnn (``.pt`` checkpoint or ``.lnz``): ``(model, record)``, the model in eval mode
    with its stored weights. Every read is verified (digests, CRCs, bounded sizes) and refused by name."""
    p = Path(path)
    source = f"checkpoint {str(p)!r}"
    if p.suffix != ".lnz":
        obj = read_checkpoint(p)
        if not is_lightnn_checkpoint(obj):
            raise CheckpointError(f"{str(p)!r} is not a lightnn checkpoint (a bare state dict needs its architecture: "
                                  f"lightnn.create_model(name, checkpoint=path))")
        model = model_from_checkpoint_dict(obj, source=source)
        record = ModelRecord.from_file_fields(obj, obj.get("meta", {}), source)
    else:
        model = load_any(p)
        record = ModelRecord.from_file_fields(
            {"model": model.lightnn_name, "arch_kwargs": model.lightnn_args,
             "transforms": getattr(model, "lightnn_transforms", [])}, getattr(model, "lightnn_meta", {}),
            f"compressed model {str(p)!r}")
    return record.attach(model).eval(), record
