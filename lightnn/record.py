"""``save`` / ``load`` of a model and its record, for every format.

A :class:`~lightnn.models.ModelRecord` (defined in :mod:`lightnn.models.record`, carried by every model
:func:`lightnn.create_model` builds) holds everything that rebuilds and uses a model apart from its weights: the registry
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

import os
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from .checkpoint import is_lightnn_checkpoint, load_any, model_from_checkpoint_dict, read_checkpoint, save_checkpoint
from .errors import CheckpointError, LightnnError
from .models import ModelRecord, create_model, record_of, set_record
from .transforms import apply_transforms

__all__ = ["ModelRecord", "save", "load", "build"]


def build(record: ModelRecord) -> nn.Module:
    """A freshly initialized model of ``record``'s architecture, its transforms replayed and the record set (the
    weights are the caller's)."""
    if record.name is None:
        raise LightnnError("build: the record has no registry name, so there is no architecture to build")
    model = apply_transforms(create_model(record.name, **record.arch_kwargs), record.transforms)
    return set_record(model, record)


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
    else:
        model = load_any(p)
    record = record_of(model)
    if record is None:  # the readers always set one; a reader that did not is a bug, not a bad file
        raise CheckpointError(f"{source}: the reader returned a model without its record")
    return model.eval(), record
