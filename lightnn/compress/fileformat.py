"""The ``.lnz`` file: a Deep-Compression-encoded model on disk (format documented in docs/lnz_format.md).

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89LNZ\\r\\n\\x1a\\n"
    8       2     format version (1)
    10      2     flags (bit 0: header is zlib-compressed; always set by this writer; other bits refused)
    12      4     header length H (bytes as stored)
    16      8     payload length P
    24      4     CRC-32 of the stored header
    28      4     CRC-32 of the payload
    32      4     CRC-32 of bytes 0..31
    36      H     header: UTF-8 JSON {model, arch_kwargs, transforms, meta, records}
    36+H    P     payload: the byte segments of every record, in record order

The JSON header carries what :func:`lightnn.checkpoint.build_model` needs to rebuild the architecture (registry
name, architecture arguments, transforms) plus one record per state-dict tensor (see :mod:`.encode`): kind, shape,
dtype, stream parameters, and ``seg``: ``{name: [offset, length]}`` into the payload, segments end to end in record
order. The file size on disk is exactly ``36 + H + P``, which is the "after Huffman" size Deep Compression reports.

No size in a file is trusted: the header inflates under a bound, every record is checked against its segments,
the segments must tile the payload, the decoded size is bounded by the file's, and :func:`load` builds the model
(bounded) and matches it against the records before decoding anything (the "Reader checks" of the format doc).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from ..checkpoint import build_model, check_architecture, check_fit, load_weights, register_file_format
from ..errors import LightnnError, LnzCorruptError, LnzError, LnzFormatError, LnzLimitError
from ..models import record_of
from ..utils.io import atomic_write_bytes
from .encode import (MAX_EXPANSION, EncodedTensor, RecordSpec, check_record, decode_budget, decode_checked,
                     encode_tensor)
from .prune import prunable_layers, resolve_setting

__all__ = ["MAGIC", "VERSION", "save_lnz", "read_lnz", "load", "encode_model", "DEFAULT_INDEX_BITS"]

MAGIC = b"\x89LNZ\r\n\x1a\n"
VERSION = 1
_PRE = struct.Struct("<8sHHIQIII")  # magic, version, flags, header_len, payload_len, header_crc, payload_crc, pre_crc
DEFAULT_INDEX_BITS = {"conv": 8, "fc": 5}  # paper, Sec. 2 (AlexNet/VGG: 8 bits conv, 5 bits fc)
_KNOWN_FLAGS = 1  # bit 0: zlib-compressed header
_HEADER_FIELDS = {"format", "model", "arch_kwargs", "transforms", "meta", "records"}
# Bounds on what a header may ask of the reader (the largest zoo models need ~700 records and ~300 KB of JSON).
MAX_HEADER_BYTES = 16 << 20
MAX_RECORDS = 1 << 14


def encode_model(model: nn.Module, *, index_bits: int | Mapping[str, int] | None = None,
                 weight_bits: int | str | Mapping[str, int] | None = "auto", block: int | None = None) -> list[EncodedTensor]:
    """Encode every state-dict tensor of ``model``: conv/linear weights sparse (or shared, when their non-zero
    values fit ``weight_bits``), everything else raw. ``index_bits``/``weight_bits`` take a number or a mapping
    by layer name / pattern / kind (``conv``, ``depthwise``, ``fc``, ``default``); ``weight_bits="auto"``
    shares every layer whose values already take few distinct levels, None shares nothing."""
    index_bits = DEFAULT_INDEX_BITS if index_bits is None else index_bits
    layer_of = {f"{n}.weight": (n, m) for n, m in prunable_layers(model).items()}
    recs = []
    for key, t in model.state_dict().items():
        ib = wb = None
        if key in layer_of:
            n, m = layer_of[key]
            ib = resolve_setting(n, m, index_bits)
            wb = resolve_setting(n, m, weight_bits) if weight_bits is not None else None
            wb = wb if wb == "auto" or not wb else int(wb)
        recs.append(encode_tensor(key, t, index_bits=int(ib) if ib else None, weight_bits=wb,
                                  block=block))
    return recs


def _header_and_payload(model: nn.Module, recs: list[EncodedTensor], meta: Mapping[str, Any] | None,
                        architecture: Mapping[str, Any] | None = None) -> tuple[bytes, bytes]:
    arch = architecture if architecture is not None else _model_architecture(model)
    name = arch.get("model")
    if name is None:
        raise LightnnError("model has no registry name (build it with lightnn.create_model), "
                           "so a .lnz file could not rebuild it")
    payload = bytearray()
    records = []
    for r in recs:
        seg = {}
        for sname, data in r.segments.items():
            seg[sname] = [len(payload), len(data)]
            payload += data
        records.append({"key": r.key, "kind": r.kind, "shape": r.shape, "dtype": r.dtype, **r.fields, "seg": seg})
    header = {"format": "lightnn-lnz", "model": name, "arch_kwargs": dict(arch.get("arch_kwargs", {})),
              "transforms": list(arch.get("transforms", [])), "meta": dict(meta or {}), "records": records}
    # refuse at write time what the reader would refuse (e.g. a class passed as an architecture argument)
    check_architecture(header, lambda what: LightnnError(f"model {name!r} cannot be saved as .lnz: its header {what}"))
    text = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
    if len(text) > MAX_HEADER_BYTES or len(records) > MAX_RECORDS:  # never write a file the reader refuses
        raise LightnnError(f"a .lnz header of {len(records)} records and {len(text):,} bytes exceeds the format's "
                           f"bounds ({MAX_RECORDS:,} records, {MAX_HEADER_BYTES:,} bytes): is 'meta' too large?")
    return zlib.compress(text, 9), bytes(payload)


def _model_architecture(model: nn.Module) -> dict[str, Any]:
    rec = record_of(model)
    return rec.architecture() if rec is not None else {"model": None, "arch_kwargs": {}, "transforms": []}


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def save_lnz(path: str | os.PathLike, model: nn.Module, *, index_bits: int | Mapping[str, int] | None = None,
             weight_bits: int | str | Mapping[str, int] | None = "auto", meta: Mapping[str, Any] | None = None,
             block: int | None = None, architecture: Mapping[str, Any] | None = None) -> dict:
    """Encode ``model`` and write it atomically to ``path``. Returns per-tensor stats and the file size.

    ``architecture`` (``{"model", "arch_kwargs", "transforms"}``, what :class:`lightnn.models.ModelRecord` holds)
    names what rebuilds the model; by default it is the model's record's."""
    unwrapped = getattr(model, "module", model)
    recs = encode_model(unwrapped, index_bits=index_bits, weight_bits=weight_bits, block=block)
    hbytes, payload = _header_and_payload(unwrapped, recs, meta, architecture)
    pre = struct.pack("<8sHHIQII", MAGIC, VERSION, 1, len(hbytes), len(payload),
                      zlib.crc32(hbytes), zlib.crc32(payload))
    blob = pre + struct.pack("<I", zlib.crc32(pre)) + hbytes + payload
    atomic_write_bytes(path, blob)
    return {"file_bytes": len(blob), "header_bytes": len(hbytes) + _PRE.size, "payload_bytes": len(payload),
            "tensors": {r.key: r.stats for r in recs}}


def _fail(p: Path, cls: type[LnzError] = LnzFormatError) -> Callable[[str], LnzError]:
    return lambda what: cls(f"compressed model {str(p)!r} {what}")


def _read_container(p: Path) -> tuple[dict, memoryview, int]:
    """Preamble, checksums, flags and the JSON header of a ``.lnz`` file: ``(header, payload, file size)``."""
    corrupt, bad, limit = _fail(p, LnzCorruptError), _fail(p), _fail(p, LnzLimitError)
    if not p.exists():
        raise _fail(p, LnzError)("does not exist")
    if p.is_dir():
        raise _fail(p, LnzError)("is a directory, not a file")
    with open(p, "rb") as f:  # the preamble first: a large file that is not a .lnz is never read whole
        pre = f.read(_PRE.size)
        if len(pre) < _PRE.size:
            if not MAGIC.startswith(pre[:8]):
                raise corrupt("is not a .lnz file (wrong magic bytes)")
            raise corrupt(f"is truncated: {len(pre)} bytes, shorter than the {_PRE.size}-byte preamble")
        magic, version, flags, hlen, plen, hcrc, pcrc, precrc = _PRE.unpack(pre)
        if magic != MAGIC:
            raise corrupt("is not a .lnz file (wrong magic bytes)")
        if zlib.crc32(pre[:-4]) != precrc:
            raise corrupt("is corrupt: preamble checksum mismatch")
        if version != VERSION:
            raise bad(f"has format version {version}; this lightnn reads version {VERSION}")
        if flags & ~_KNOWN_FLAGS:
            raise bad(f"sets unknown flag bits {flags & ~_KNOWN_FLAGS:#06x} (flags {flags:#06x}; this lightnn knows "
                      f"{_KNOWN_FLAGS:#06x}: a newer writer?)")
        size, expected = os.fstat(f.fileno()).st_size, _PRE.size + hlen + plen
        if size < expected:
            raise corrupt(f"is truncated: {size} bytes, expected {expected}")
        if size > expected:
            raise corrupt(f"has {size - expected} unexpected trailing bytes (expected {expected} bytes)")
        blob = pre + f.read()
    if len(blob) != expected:  # the file changed while it was read
        raise corrupt(f"is truncated: {len(blob)} bytes, expected {expected}")
    hbytes = blob[_PRE.size:_PRE.size + hlen]
    payload = memoryview(blob)[_PRE.size + hlen:]
    if zlib.crc32(hbytes) != hcrc:
        raise corrupt("is corrupt: header checksum mismatch")
    if zlib.crc32(payload) != pcrc:
        raise corrupt("is corrupt: payload checksum mismatch")
    try:
        if flags & 1:
            z = zlib.decompressobj()
            raw = z.decompress(hbytes, MAX_HEADER_BYTES + 1)  # bounded: a small header may not inflate to gigabytes
            if len(raw) > MAX_HEADER_BYTES:
                raise limit(f"has a header that inflates past {MAX_HEADER_BYTES:,} bytes")
            if not z.eof or z.unused_data:
                raise bad("has an unreadable header: the compressed header is incomplete or followed by junk")
        else:
            raw = hbytes
            if len(raw) > MAX_HEADER_BYTES:
                raise limit(f"has a header of {len(raw):,} bytes, more than {MAX_HEADER_BYTES:,}")
        header = json.loads(raw.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as e:
        if isinstance(e, LnzError):
            raise
        raise bad(f"has an unreadable header: {type(e).__name__}: {e}") from None
    return header, payload, len(blob)


def _check_meta(meta: Any, bad: Callable[[str], LnzError]) -> None:
    if not isinstance(meta, dict):
        raise bad(f"has 'meta' of type {type(meta).__name__}; expected a mapping")
    norm = meta.get("normalize")
    if norm is None:
        return
    ok = isinstance(norm, dict) and all(
        isinstance(norm.get(k), list) and 1 <= len(norm[k]) <= 4096
        and all(type(v) in (int, float) and math.isfinite(v) for v in norm[k]) for k in ("mean", "std"))
    if not (ok and len(norm["mean"]) == len(norm["std"]) and all(v > 0 for v in norm["std"])):
        raise bad(f"has meta.normalize {str(norm)[:80]!r}; expected mean and std lists of equal length, std > 0")


def _check_header(header: Any, plen: int, file_bytes: int, p: Path) -> list[tuple[RecordSpec, dict]]:
    """Every field of the header, before anything is decoded: the architecture, one valid record per tensor, the
    segments tiling the payload in record order (no gaps, overlaps or aliases), and the decoded size bounded by
    the file's. Returns ``(spec, {segment: (offset, length)})`` per record."""
    bad, limit = _fail(p), _fail(p, LnzLimitError)
    if not isinstance(header, dict) or header.get("format") != "lightnn-lnz" or not isinstance(header.get("records"), list):
        raise bad("has a header that is not a lightnn .lnz header")
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise bad(f"has unknown header fields {unknown}")

    check_architecture(header, bad)
    _check_meta(header.get("meta", {}), bad)
    records = header["records"]
    if len(records) > MAX_RECORDS:
        raise limit(f"has {len(records):,} records, more than {MAX_RECORDS:,}")
    out, keys, at = [], set(), 0
    for i, rec in enumerate(records):
        seg = rec.get("seg") if isinstance(rec, dict) else None
        if not isinstance(seg, dict):
            raise bad(f"record #{i} has no 'seg' mapping of segment names to [offset, length]")
        where = {}
        for name, ol in seg.items():
            if not (isinstance(ol, list) and len(ol) == 2 and all(type(v) is int and v >= 0 for v in ol)):
                raise bad(f"record #{i} segment {name!r} is {ol!r}; expected [offset, length]")
            if ol[0] != at:  # the writer lays segments end to end in record order
                raise bad(f"record #{i} segment {name!r} starts at payload byte {ol[0]}, expected {at} (segments "
                          f"may not overlap, alias or leave gaps)")
            at += ol[1]
            if at > plen:
                raise bad(f"record #{i} segment {name!r} runs past the {plen}-byte payload")
            where[name] = tuple(ol)
        try:
            spec = check_record(rec, {k: ln for k, (_, ln) in where.items()})
        except LnzError as e:
            raise type(e)(f"compressed model {str(p)!r} record #{i}: {e}") from None
        if spec.key in keys:
            raise bad(f"has two records for tensor {spec.key!r}")
        keys.add(spec.key)
        out.append((spec, where))
    if at != plen:
        raise bad(f"has {plen - at} payload bytes that no record uses")
    total = sum(spec.out_bytes for spec, _ in out)
    if total > decode_budget(file_bytes):
        raise limit(f"would decode to {total:,} bytes of tensors, more than {decode_budget(file_bytes):,} "
                    f"({MAX_EXPANSION}x its {file_bytes:,} bytes; Deep Compression reaches ~50x)")
    return out


def _decode_records(checked: list[tuple[RecordSpec, dict]], payload: memoryview, p: Path) -> dict[str, torch.Tensor]:
    state = {}
    for spec, where in checked:
        segs = {name: bytes(payload[off:off + ln]) for name, (off, ln) in where.items()}
        try:
            state[spec.key] = decode_checked(spec, segs)
        except LnzError as e:
            raise type(e)(f"compressed model {str(p)!r}: {e}") from None
    return state


def _declared(checked: list[tuple[RecordSpec, dict]]) -> dict:
    return {spec.key: (spec.shape, getattr(torch, spec.out_dtype)) for spec, _ in checked}


def read_lnz(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read, verify and decode a ``.lnz`` file; returns ``(header, state_dict)``. Every problem raises a
    :class:`~lightnn.errors.LnzError` subclass naming the file and what is wrong: damage
    (:class:`LnzCorruptError`), inconsistent structure (:class:`LnzFormatError`) or a size beyond what the
    file can hold (:class:`LnzLimitError`), each found before the memory it would take is allocated."""
    p = Path(path)
    header, payload, size = _read_container(p)
    checked = _check_header(header, len(payload), size, p)
    return header, _decode_records(checked, payload, p)


def load(path: str | os.PathLike) -> nn.Module:
    """Decode a ``.lnz`` file into the model it was written from, with exactly the stored weights.

    The model is built (bounded by the tensors the header declares) and the declared keys, shapes and dtypes are
    checked against it before any tensor is decoded."""
    p = Path(path)
    header, payload, size = _read_container(p)
    checked = _check_header(header, len(payload), size, p)
    source = f"compressed model {str(p)!r}"
    declared = _declared(checked)
    model = build_model(header, declared, source=source)
    check_fit(model, declared, source=source)
    return load_weights(model, _decode_records(checked, payload, p), source=source)  # its record: build_model


register_file_format(".lnz", load)  # lightnn.checkpoint.load_any (and so eval, export, quantize) reads .lnz
