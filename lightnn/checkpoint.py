"""Checkpoints that rebuild without pickled code, verified on every read.

A lightnn checkpoint is a ``torch.save`` dict of plain data (loaded with ``weights_only=True``)::

    {"format": "lightnn-checkpoint", "version": 1,
     "model": registry name, "arch_kwargs": {...},       # create_model(model, **arch_kwargs)
     "transforms": [{"kind": "channels", ...}, ...],       # architecture edits applied in order (pruning, low-rank)
     "state_dict": {...}, "meta": {...},                   # weights and free-form metadata (metrics, epoch)
     "train_state": {...} | absent,                        # optimizer / schedule / epoch, for resuming
     "digest": {"algorithm": "sha256", "sha256": ..., "tensors": [...]}}   # of every tensor above

Architecture edits are plain data too: each is a spec replayed by the transform registered for its kind in
:mod:`lightnn.transforms` (``kind -> fn(model, spec) -> model``); :func:`load_model` replays them before loading
the weights.
Writes are atomic (temporary file + rename).

Reading (:func:`read_checkpoint`) refuses, with a :class:`~lightnn.errors.CheckpointError` naming the file:
pickled code (the blocked global is named), a zip record whose CRC-32 does not match (``torch.load`` never checks
them), tensors that differ from the digest stored when the file was written (the first such tensor is named), a
format ``version`` newer than this code, fields of the wrong type, and tensors larger than the file can hold.
Checkpoints written before the digest existed still load (their zip CRCs are still checked). Rebuilding
(:func:`model_from_checkpoint_dict`) bounds the model the architecture arguments build by the weights the file
holds, aborting the build as soon as it grows past that, and names the keys that do not fit.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointError, LightnnError
from .models import ModelRecord, create_model, model_name, record_of, set_checkpoint_loader, set_record
from .transforms import apply_transforms
from .utils.io import atomic_torch_save

FORMAT = "lightnn-checkpoint"
VERSION = 1
DIGEST_ALGORITHM = "sha256"

# Architecture arguments are scalars or short lists; anything beyond these is not an architecture.
_MAX_ARG_NUMBER = 2**24
_MAX_ARG_ITEMS = 4096
# A model may register (while it is built, before any transform) at most 2x the values its weights hold plus this
# slack; with transforms (pruning, low-rank) the unedited model can be far larger than the weights, so it gets
# 16x or this floor (1 GiB of float32), whichever is more. Module registrations are bounded alike.
_BUILD_SLACK = 1 << 20
_BUILD_FLOOR_WITH_TRANSFORMS = 1 << 28

# ---------------------------------------------------------------------------------------------------- digest


def _tensor_items(ckpt: Mapping) -> list[tuple[str, torch.Tensor]]:
    """Every tensor of a checkpoint (all fields but ``digest``) with its path, sorted by path: the digest's order.
    Iterative, and each container is visited once, so a crafted self-referencing pickle cannot recurse forever."""
    found, seen = [], set()
    stack = [(str(k), v) for k, v in ckpt.items() if k != "digest"]
    while stack:
        path, o = stack.pop()
        if isinstance(o, torch.Tensor):
            found.append((path, o))
        elif isinstance(o, (dict, list, tuple)) and id(o) not in seen:
            seen.add(id(o))
            stack.extend((f"{path}/{k}", v) for k, v in (o.items() if isinstance(o, dict) else enumerate(o)))
    found.sort(key=lambda item: item[0])
    return found


def _tensor_digest(path: str, t: torch.Tensor) -> bytes:
    """sha256 over the tensor's path, dtype, shape and raw bytes (native byte order, row-major)."""
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    t = t.cpu().contiguous()
    h = hashlib.sha256(f"{path}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.digest()


def weights_digest(ckpt: Mapping) -> dict:
    """The ``digest`` field of a checkpoint dict: sha256 of every tensor (names, dtypes, shapes, bytes) in path order,
    plus the first 64 bits of each tensor's own digest so that a mismatch names the tensor that changed."""
    each = [_tensor_digest(path, t) for path, t in _tensor_items(ckpt)]
    return {"algorithm": DIGEST_ALGORITHM, "sha256": hashlib.sha256(b"".join(each)).hexdigest(),
            "tensors": [d[:8].hex() for d in each]}


def _verify_digest(obj: Mapping, name: str) -> None:
    stored = obj.get("digest")
    if stored is None:
        return  # written before checkpoints carried a digest
    if not (isinstance(stored, Mapping) and isinstance(stored.get("sha256"), str)
            and isinstance(stored.get("tensors"), list)):
        raise CheckpointError(f"checkpoint {name!r} has a malformed 'digest' field (expected algorithm, sha256, tensors)")
    if stored.get("algorithm") != DIGEST_ALGORITHM:
        raise CheckpointError(f"checkpoint {name!r} has a digest of unknown algorithm {stored.get('algorithm')!r} "
                              f"(this lightnn checks {DIGEST_ALGORITHM})")
    items = _tensor_items(obj)
    each = [_tensor_digest(path, t) for path, t in items]
    if hashlib.sha256(b"".join(each)).hexdigest() == stored["sha256"]:
        return
    listed = stored["tensors"]
    if len(listed) != len(items):
        raise CheckpointError(f"checkpoint {name!r} is corrupt: it holds {len(items)} tensors but its digest was "
                              f"written over {len(listed)}")
    for (path, _), d, s in zip(items, each, listed):
        if d[:8].hex() != s:
            raise CheckpointError(f"checkpoint {name!r} is corrupt: tensor {path!r} differs from the digest written "
                                  f"with it (a changed bit in its data); refusing to load it")
    raise CheckpointError(f"checkpoint {name!r} is corrupt: its tensors do not match the digest written with them")


# ---------------------------------------------------------------------------------------------------- writing


def checkpoint_dict(model: nn.Module, *, meta: dict | None = None, train_state: dict | None = None,
                    architecture: Mapping[str, Any] | None = None) -> dict:
    """The plain-data checkpoint of ``model`` (registry name, architecture, transforms, weights) with its digest.

    ``architecture`` (``{"model", "arch_kwargs", "transforms"}``, what :class:`lightnn.models.ModelRecord` holds)
    names what rebuilds the model; by default it is the model's record's."""
    rec = record_of(model)
    arch = architecture if architecture is not None else (rec.architecture() if rec is not None else {})
    name = arch.get("model")
    if name is None:
        raise LightnnError(
            "model has no registry name (build it with lightnn.create_model) so its checkpoint could not be rebuilt"
        )
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "arch_kwargs": dict(arch.get("arch_kwargs", {})),
        "transforms": [dict(t) for t in arch.get("transforms", [])],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    # refuse at save time what the loader would refuse (e.g. a class passed as an architecture argument)
    check_architecture(ckpt, lambda what: LightnnError(f"model {name!r} cannot be saved: its checkpoint {what}"))
    if train_state is not None:
        ckpt["train_state"] = train_state
    ckpt["digest"] = weights_digest(ckpt)
    return ckpt


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, meta: dict | None = None,
                    train_state: dict | None = None, architecture: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (registry name, architecture arguments, transforms, weights, digest) atomically to ``path``."""
    unwrapped = getattr(model, "module", model)  # DDP
    return atomic_torch_save(checkpoint_dict(unwrapped, meta=meta, train_state=train_state,
                                             architecture=architecture), path)


# ---------------------------------------------------------------------------------------------------- reading


def _check_zip(p: Path, name: str, storages: bool) -> None:
    """Refuse a stored zip record (tensor storages, or all the others) whose bytes fail their CRC-32 check."""
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                # torch.save writes stored records; a compressed one is left to torch (inflating could be a bomb)
                if info.compress_type != zipfile.ZIP_STORED or ("/data/" in info.filename) != storages:
                    continue
                try:
                    with z.open(info) as f:
                        while f.read(1 << 24):
                            pass
                except (zipfile.BadZipFile, EOFError) as e:
                    what = "tensor storage" if storages else "record"
                    raise CheckpointError(f"checkpoint {name!r} is corrupt: {what} {info.filename!r} fails its zip "
                                          f"check ({e})") from None
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {name!r} is not a readable zip archive: {e}") from None


def _load_failure(e: Exception) -> str:
    """torch.load's reason in one line, whole: the blocked global's name for pickled code, without torch's advice
    to load with ``weights_only=False`` or to allowlist the global."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Weights only load failed" in text:
        reason = next((ln for ln in lines if "GLOBAL" in ln), None) or next(
            (ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[-1] if lines else "")
        reason = reason.split(" Please use `torch.serialization", 1)[0].removeprefix("WeightsUnpickler error: ")
        found = re.search(r"GLOBAL ([\w.]+)", reason)
        if found:
            glob = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
            return (f"is refused: it holds pickled code or objects, not plain data (global {glob}: {reason}); "
                    f"lightnn loads weights only and never runs code from a file")
        return f"is refused: torch.load(weights_only=True) rejects it ({reason})"
    return f"cannot be read: {type(e).__name__}: {' '.join(lines)}"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a checkpoint file as plain data, verified; raises :class:`CheckpointError` with the path on any problem.

    Order: a zip archive; CRC-32 of its non-tensor records (the pickle); ``torch.load(weights_only=True)``; for a
    lightnn checkpoint its fields, version, tensor sizes and digest; then the CRC-32 of every tensor storage."""
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {name!r} is a directory, not a file")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else is not a checkpoint
        raise CheckpointError(f"{name!r} is not a PyTorch checkpoint (expected a torch.save zip archive; "
                              f"an .onnx or .lnz file goes to the commands that take those)")
    _check_zip(p, name, storages=False)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickled code
        raise CheckpointError(f"checkpoint {name!r} {_load_failure(e)}") from None
    if is_lightnn_checkpoint(obj):
        _check_fields(obj, name, p.stat().st_size)
        _verify_digest(obj, name)
    _check_zip(p, name, storages=True)
    return obj


def is_lightnn_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _check_plain(value: Any, where: str, fail: Callable[[str], Exception], depth: int = 0) -> int:
    """Architecture arguments are plain, bounded data; returns how many items ``value`` holds."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        if not (abs(value) <= _MAX_ARG_NUMBER):  # also False for NaN; ints are compared exactly
            raise fail(f"has {where} = {value!r}, outside the range an architecture argument can take "
                       f"(finite, at most {_MAX_ARG_NUMBER:,} in size)")
        return 1
    if isinstance(value, str):
        if len(value) > 256:
            raise fail(f"has {where}, a string of {len(value)} characters (at most 256)")
        return 1
    if isinstance(value, (list, tuple, dict)) and depth < 4:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        n = 0
        for k, v in items:
            if isinstance(value, dict) and not isinstance(k, str):
                raise fail(f"has {where} with a non-string key {k!r}")
            n += _check_plain(v, f"{where}[{k!r}]", fail, depth + 1)
            if n > _MAX_ARG_ITEMS:
                raise fail(f"has {where} with more than {_MAX_ARG_ITEMS} items")
        return n
    raise fail(f"has {where} of type {type(value).__name__}, which is not an architecture argument")


def check_architecture(d: Mapping, fail: Callable[[str], Exception]) -> None:
    """Type-check the fields that rebuild a model (``model``, ``arch_kwargs``, ``transforms``) of a checkpoint or a
    ``.lnz`` header; ``fail(what)`` makes the error to raise, naming the file."""
    model = d.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise fail(f"has no model name ('model' is {model!r}; expected a registry name)")
    args = d.get("arch_kwargs", {})
    if not isinstance(args, Mapping):
        raise fail(f"has 'arch_kwargs' of type {type(args).__name__}; expected a mapping of argument names to values")
    for k, v in args.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise fail(f"has an architecture argument named {k!r}, which is not an identifier")
        _check_plain(v, f"arch_kwargs[{k!r}]", fail)
    transforms = d.get("transforms", [])
    if not isinstance(transforms, list):
        raise fail(f"has 'transforms' of type {type(transforms).__name__}; expected a list of transform specs")
    for i, spec in enumerate(transforms):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
            raise fail(f"has transform #{i} = {str(spec)[:80]!r}, not a mapping with a 'kind'")


def _check_fields(obj: dict, name: str, file_bytes: int) -> None:
    """A lightnn checkpoint's fields have the types the loader relies on, and its tensors fit in the file."""

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {name!r} {what}")

    version = obj.get("version", 1)
    if type(version) is not int or version < 1:
        raise fail(f"has version {version!r}; expected a positive integer")
    if version > VERSION:
        raise fail(f"has format version {version}, written by a newer lightnn; this lightnn reads versions "
                   f"1 to {VERSION}: upgrade lightnn to load it")
    check_architecture(obj, fail)
    sd = obj.get("state_dict")
    if not isinstance(sd, Mapping):
        raise fail("has no 'state_dict' (the weights)" if sd is None else
                   f"has 'state_dict' of type {type(sd).__name__}; expected a mapping of names to tensors")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise fail(f"has state_dict entry {k!r} of type {type(v).__name__}; expected a tensor under a string key")
    for field in ("meta", "train_state"):
        if obj.get(field) is not None and not isinstance(obj[field], Mapping):
            raise fail(f"has {field!r} of type {type(obj[field]).__name__}; expected a mapping")
    total = 0
    for path, t in _tensor_items(obj):
        if t.layout != torch.strided:
            raise fail(f"has tensor {path!r} with layout {t.layout}; lightnn writes dense tensors only")
        need = t.numel() * t.element_size()
        if need > t.untyped_storage().nbytes():  # an expanded view: a small file claiming a huge tensor
            raise fail(f"has tensor {path!r} of shape {list(t.shape)} ({need:,} bytes) over a storage of "
                       f"{t.untyped_storage().nbytes():,} bytes; lightnn writes dense tensors only")
        total += need
    if total > 4 * file_bytes + (1 << 20):
        raise fail(f"holds tensors of {total:,} bytes in all, more than a {file_bytes:,}-byte file can hold")


# ---------------------------------------------------------------------------------------------------- rebuilding

Spec = tuple[tuple[int, ...], torch.dtype]  # the shape and dtype a file declares for one state-dict entry


class _OverBudget(Exception):
    pass


@contextmanager
def _build_budget(values: int, modules: int) -> Iterator[None]:
    """Abort (raise :class:`_OverBudget`) a model build in this thread that registers more than ``values``
    parameter/buffer elements or ``modules`` submodules, before it allocates or initializes the rest."""
    owner = threading.get_ident()
    used = [0, 0]

    def on_tensor(module, name, t):
        if t is not None and threading.get_ident() == owner:
            used[0] += t.numel()
            if used[0] > values:
                raise _OverBudget(f"more than {values:,} parameter and buffer values")

    def on_module(module, name, sub):
        if threading.get_ident() == owner:
            used[1] += 1
            if used[1] > modules:
                raise _OverBudget(f"more than {modules:,} modules")

    from torch.nn.modules import module as tm

    handles = [tm.register_module_parameter_registration_hook(on_tensor),
               tm.register_module_buffer_registration_hook(on_tensor),
               tm.register_module_module_registration_hook(on_module)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build_model(ckpt: Mapping, declared: Mapping[str, Spec], *, source: str, **overrides: Any) -> nn.Module:
    """``create_model`` + transforms for a checkpoint (or ``.lnz`` header) whose weights have the shapes in
    ``declared``. The build is bounded by those weights (see the module docstring); any failure becomes a
    :class:`CheckpointError` naming ``source`` and the architecture. The model gets the record of the file:
    its architecture, transforms and the record fields of its ``meta`` (normalization, classes, ...)."""
    transforms = list(ckpt.get("transforms", []))
    args = dict(ckpt.get("arch_kwargs", {}))
    args.update(overrides)
    values = sum(math.prod(shape) for shape, _ in declared.values())
    if transforms:
        budget = (max(16 * values, _BUILD_FLOOR_WITH_TRANSFORMS), 16 * len(declared) + 4096)
    else:
        budget = (2 * values + _BUILD_SLACK, 4 * len(declared) + 1024)
    what = f"model {ckpt['model']!r} with arch_kwargs {args}"
    try:
        with _build_budget(*budget):
            model = create_model(ckpt["model"], **args)
            model = apply_transforms(model, transforms)
    except _OverBudget as e:
        raise CheckpointError(f"{source}: refusing to build {what}: it needs {e}, far more than the "
                              f"{values:,} values its weights hold (an architecture argument out of range?)") from None
    except LightnnError as e:
        raise CheckpointError(f"{source}: cannot build {what}: {e}") from None
    except Exception as e:  # a builder or transform meeting arguments it cannot use
        if isinstance(e, MemoryError) or "alloc" in str(e):
            raise CheckpointError(f"{source}: refusing to build {what}: it asks for more memory than this machine "
                                  f"has (an architecture argument out of range?)") from None
        raise CheckpointError(f"{source}: cannot build {what}: {type(e).__name__}: {' '.join(str(e).split())}") from None
    arch = {"model": ckpt["model"], "arch_kwargs": record_of(model).arch_kwargs, "transforms": transforms}
    return set_record(model, ModelRecord.from_file_fields(arch, ckpt.get("meta") or {}, source))


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def _listed(items: list[str], noun: str) -> str:
    shown = ", ".join(items[:3]) + (f", ... ({len(items) - 3} more)" if len(items) > 3 else "")
    plural = noun + ("es" if noun.endswith("ch") else "s") if len(items) != 1 else noun
    return f"{len(items)} {plural}: {shown}"


def check_fit(model: nn.Module, declared: Mapping[str, Spec], *, source: str) -> None:
    """Refuse weights that do not fit ``model``, naming missing, unexpected, shape- and dtype-mismatched keys (a
    float stored for an integer buffer would be silently truncated by ``load_state_dict``)."""
    want = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    missing = [repr(k) for k in want if k not in declared]
    unexpected = [repr(k) for k in declared if k not in want]
    both = [k for k in want if k in declared]
    shapes = [f"{k!r} is {list(declared[k][0])} in the file, {list(want[k][0])} in the model" for k in both
              if tuple(declared[k][0]) != want[k][0]]
    kinds = [f"{k!r} is {str(declared[k][1]).removeprefix('torch.')} in the file, "
             f"{str(want[k][1]).removeprefix('torch.')} in the model" for k in both
             if _dtype_kind(declared[k][1]) != _dtype_kind(want[k][1])]
    parts = [_listed(x, noun) for x, noun in ((missing, "missing key"), (unexpected, "unexpected key"),
                                               (shapes, "shape mismatch"), (kinds, "dtype mismatch")) if x]
    if parts:
        raise CheckpointError(f"{source}: weights do not fit model {model_name(model)!r}: {'; '.join(parts)}")


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> nn.Module:
    """Load checked weights strictly; warn (naming ``source``) when some of them are NaN or infinite."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights do not fit model: {' '.join(str(e).split())}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        warnings.warn(f"{source}: {len(bad)} of {len(state)} tensors hold NaN or infinite values "
                      f"(first: {bad[0]!r}); the model's outputs will not be meaningful", stacklevel=3)
    return model


def model_from_checkpoint_dict(ckpt: dict, *, source: str = "checkpoint", **overrides: Any) -> nn.Module:
    """Rebuild the model of a checkpoint dict: build (bounded), check the weights fit, load them."""
    check_architecture(ckpt, lambda what: CheckpointError(f"{source} {what}"))
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} has no 'state_dict' mapping names to tensors")
    declared = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    model = build_model(ckpt, declared, source=source, **overrides)
    check_fit(model, declared, source=source)
    return load_weights(model, state, source=source)


def load_model(path: str | os.PathLike, name: str | None = None, **overrides: Any) -> nn.Module:
    """Rebuild a model from a lightnn checkpoint, or load a torchvision state dict into ``name``.

    For a lightnn checkpoint, ``name`` (if given) must match the stored one, and ``overrides`` replace stored
    architecture arguments (``num_classes=1000``/``in_chans=3`` defaults are ignored when they equal the default).
    """
    obj = read_checkpoint(path)
    source = f"checkpoint {str(path)!r}"
    if is_lightnn_checkpoint(obj):
        if name is not None and name != obj["model"]:
            raise CheckpointError(f"{source} holds model {obj['model']!r}, not {name!r}")
        stored = obj.get("arch_kwargs", {})
        ov = {k: v for k, v in overrides.items() if not (k in ("num_classes", "in_chans") and k in stored
                                                           and v == {"num_classes": 1000, "in_chans": 3}[k])}
        return model_from_checkpoint_dict(obj, source=source, **ov)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if name is None:
            raise CheckpointError(f"{str(path)!r} is a bare state dict: name the architecture it belongs to")
        from .models.convert import load_foreign_state_dict

        model = create_model(name, **overrides)
        load_foreign_state_dict(model, obj, source=str(path))
        return model
    raise CheckpointError(f"{str(path)!r} is neither a lightnn checkpoint nor a state dict")


# File formats other than ``.pt`` register a reader here (``.lnz``: :mod:`lightnn.compress.fileformat`), so this
# layer dispatches on the suffix without importing the code above it that writes those files.
_READERS: dict[str, Callable[[Path], nn.Module]] = {}


def register_file_format(suffix: str, reader: Callable[[Path], nn.Module], *, replace: bool = False) -> None:
    """Make :func:`load_any` read files ending in ``suffix`` (e.g. ``".lnz"``) with ``reader(path) -> model``."""
    if suffix in _READERS and _READERS[suffix] is not reader and not replace:
        raise LightnnError(f"file format {suffix!r} already has a reader; pass replace=True to override it")
    _READERS[suffix] = reader


def load_any(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Load a model from any file lightnn writes: a checkpoint (``.pt``) or a registered format (``.lnz``)."""
    p = Path(path)
    if p.suffix in _READERS:
        if overrides:
            raise CheckpointError(f"{str(p)!r}: a {p.suffix} file rebuilds its stored architecture; architecture "
                                  f"arguments {sorted(overrides)} cannot be changed when loading it")
        return _READERS[p.suffix](p)
    return load_model(p, **overrides)


set_checkpoint_loader(load_model)  # create_model(name, checkpoint=...) rebuilds through this module
