"""The ``.lnz`` file: a Deep-Compression-encoded model on disk (format documented in docs/lnz_format.md).

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89LNZ\\r\\n\\x1a\\n"
    8       2     format version (1)
    10      2     flags (bit 0: header is zlib-compressed; always set by this writer)
    12      4     header length H (bytes as stored)
    16      8     payload length P
    24      4     CRC-32 of the stored header
    28      4     CRC-32 of the payload
    32      4     CRC-32 of bytes 0..31
    36      H     header: UTF-8 JSON {model, arch_kwargs, transforms, meta, records}
    36+H    P     payload: the byte segments of every record, in record order

The JSON header carries what :func:`lightnn.checkpoint.model_from_checkpoint_dict` needs to rebuild the
architecture (registry name, architecture arguments, transforms) plus one record per state-dict tensor (see
:mod:`.encode`): kind, shape, dtype, stream parameters, and ``seg``: ``{name: [offset, length]}`` into the payload.
The file size on disk is exactly ``36 + H + P``, which is the "after Huffman" size Deep Compression reports.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError, LightnnError
from ..utils.io import atomic_write_bytes
from .encode import EncodedTensor, decode_tensor, encode_tensor
from .prune import prunable_layers, resolve_setting

__all__ = ["MAGIC", "VERSION", "save_lnz", "read_lnz", "load", "encode_model", "DEFAULT_INDEX_BITS"]

MAGIC = b"\x89LNZ\r\n\x1a\n"
VERSION = 1
_PRE = struct.Struct("<8sHHIQIII")  # magic, version, flags, header_len, payload_len, header_crc, payload_crc, pre_crc
DEFAULT_INDEX_BITS = {"conv": 8, "fc": 5}  # paper, Sec. 2 (AlexNet/VGG: 8 bits conv, 5 bits fc)


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


def _header_and_payload(model: nn.Module, recs: list[EncodedTensor], meta: Mapping[str, Any] | None) -> tuple[bytes, bytes]:
    name = getattr(model, "lightnn_name", None)
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
    header = {"format": "lightnn-lnz", "model": name, "arch_kwargs": dict(getattr(model, "lightnn_args", {})),
              "transforms": list(getattr(model, "lightnn_transforms", [])), "meta": dict(meta or {}),
              "records": records}
    hbytes = zlib.compress(json.dumps(header, separators=(",", ":"), default=_json_default).encode(), 9)
    return hbytes, bytes(payload)


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
             block: int | None = None) -> dict:
    """Encode ``model`` and write it atomically to ``path``. Returns per-tensor stats and the file size."""
    unwrapped = getattr(model, "module", model)
    recs = encode_model(unwrapped, index_bits=index_bits, weight_bits=weight_bits, block=block)
    hbytes, payload = _header_and_payload(unwrapped, recs, meta)
    pre = struct.pack("<8sHHIQII", MAGIC, VERSION, 1, len(hbytes), len(payload),
                      zlib.crc32(hbytes), zlib.crc32(payload))
    blob = pre + struct.pack("<I", zlib.crc32(pre)) + hbytes + payload
    atomic_write_bytes(path, blob)
    return {"file_bytes": len(blob), "header_bytes": len(hbytes) + _PRE.size, "payload_bytes": len(payload),
            "tensors": {r.key: r.stats for r in recs}}


def read_lnz(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify a ``.lnz`` file; returns ``(header, state_dict)``. Every problem raises
    :class:`CheckpointError` naming the file and what is wrong."""
    p = Path(path)

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"compressed model {str(p)!r} {what}")

    if not p.exists():
        raise fail("does not exist")
    if p.is_dir():
        raise fail("is a directory, not a file")
    blob = p.read_bytes()
    if len(blob) < _PRE.size:
        if not MAGIC.startswith(blob[:8]):
            raise fail("is not a .lnz file (wrong magic bytes)")
        raise fail(f"is truncated: {len(blob)} bytes, shorter than the {_PRE.size}-byte preamble")
    magic, version, flags, hlen, plen, hcrc, pcrc, precrc = _PRE.unpack_from(blob)
    if magic != MAGIC:
        raise fail("is not a .lnz file (wrong magic bytes)")
    if zlib.crc32(blob[:_PRE.size - 4]) != precrc:
        raise fail("is corrupt: preamble checksum mismatch")
    if version != VERSION:
        raise fail(f"has format version {version}; this lightnn reads version {VERSION}")
    expected = _PRE.size + hlen + plen
    if len(blob) < expected:
        raise fail(f"is truncated: {len(blob)} bytes, expected {expected}")
    if len(blob) > expected:
        raise fail(f"has {len(blob) - expected} unexpected trailing bytes (expected {expected} bytes)")
    hbytes = blob[_PRE.size:_PRE.size + hlen]
    payload = memoryview(blob)[_PRE.size + hlen:]
    if zlib.crc32(hbytes) != hcrc:
        raise fail("is corrupt: header checksum mismatch")
    if zlib.crc32(payload) != pcrc:
        raise fail("is corrupt: payload checksum mismatch")
    try:
        raw = zlib.decompress(hbytes) if flags & 1 else hbytes
        header = json.loads(raw.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"has an unreadable header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != "lightnn-lnz" or "records" not in header:
        raise fail("has a header that is not a lightnn .lnz header")
    state = {}
    for rec in header["records"]:
        key = rec.get("key", "?")
        try:
            segs = {}
            for sname, (off, ln) in rec["seg"].items():
                if off < 0 or off + ln > plen:
                    raise ValueError(f"segment {sname!r} lies outside the payload")
                segs[sname] = bytes(payload[off:off + ln])
            state[key] = decode_tensor(rec, segs)
        except (ValueError, KeyError, TypeError) as e:
            raise fail(f"cannot decode tensor {key!r}: {e}") from None
    return header, state


def load(path: str | os.PathLike) -> nn.Module:
    """Decode a ``.lnz`` file into the model it was written from, with exactly the stored weights."""
    from ..checkpoint import model_from_checkpoint_dict

    header, state = read_lnz(path)
    ckpt = {"model": header["model"], "arch_kwargs": header.get("arch_kwargs", {}),
            "transforms": header.get("transforms", []), "state_dict": state}
    try:
        model = model_from_checkpoint_dict(ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"compressed model {str(path)!r}: {e}") from None
    model.lightnn_meta = header.get("meta", {})
    norm = model.lightnn_meta.get("normalize")
    if norm:  # input normalization the model was trained with (lightnn eval reads it)
        model.lightnn_normalize = norm
    return model
