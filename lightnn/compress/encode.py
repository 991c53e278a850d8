"""Sparse storage of pruned / shared weights (Deep Compression Sec. 2 and 4) and its size accounting.

A layer's weight is flattened (row-major, the PyTorch memory order) and only its non-zero entries are stored,
each as ``(gap, value)``: ``gap`` is the distance from the previous stored entry (the first entry counts from
position -1), held in ``index_bits`` bits as ``gap - 1`` so gaps 1 .. 2^index_bits fit. A longer gap is bridged
by **filler zeros** (paper Fig. 2): an entry at exactly 2^index_bits past the previous one whose value is zero.
With weight sharing, ``value`` is a codebook index where code 0 is the filler zero and codes 1..k the shared
values; without sharing it is the float32 weight (0.0 for a filler).

Both the gap stream and the code stream are then Huffman-coded (:mod:`.huffman`).

The record kinds are ``raw`` (any dtype, dense bytes: biases, batch norm, unpruned tensors), ``sparse``
(Huffman-coded gaps + float32 values) and ``shared`` (float32 codebook + Huffman-coded gaps and codes).
:func:`encode_tensor` picks ``shared`` when the non-zero values take at most ``2^bits - 1`` distinct values,
else ``sparse`` when that is smaller than ``raw``, else ``raw``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import huffman

__all__ = ["relative_indices", "absolute_positions", "encode_tensor", "decode_tensor", "EncodedTensor"]

_NP_DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64, "bfloat16": None,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


def relative_indices(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap symbols (``gap - 1``) for sorted flat ``positions``, with filler entries inserted for long gaps.

    Returns ``(symbols, is_real)``: ``is_real`` is False for filler entries.
    """
    positions = np.asarray(positions, dtype=np.int64)
    span = 1 << index_bits
    gaps = np.diff(positions, prepend=-1)
    fillers = (gaps - 1) // span  # fillers needed before each real entry
    total = len(positions) + int(fillers.sum())
    # each real entry i expands to fillers[i] fillers (gap = span) followed by itself (the remainder)
    reps = fillers + 1
    is_real = np.zeros(total, dtype=bool)
    ends = np.cumsum(reps) - 1
    is_real[ends] = True
    symbols = np.full(total, span - 1, dtype=np.int64)
    symbols[ends] = gaps - fillers * span - 1
    return symbols, is_real


def absolute_positions(symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`relative_indices`: flat position of every stored entry (fillers included)."""
    return np.cumsum(np.asarray(symbols, dtype=np.int64) + 1) - 1


@dataclass
class EncodedTensor:
    """One state-dict tensor ready for the file: header fields plus named byte segments."""

    key: str
    kind: str  # raw | sparse | shared
    shape: list[int]
    dtype: str
    fields: dict = field(default_factory=dict)
    segments: dict[str, bytes] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _pack_lengths(lengths: np.ndarray) -> tuple[int, bytes]:
    """Code-length table, trimmed after the last used symbol; 4 bits per symbol when every length is <= 15."""
    used = np.flatnonzero(lengths)
    lens = np.asarray(lengths[: used[-1] + 1 if len(used) else 0], dtype=np.uint8)
    if lens.max(initial=0) <= 15:
        padded = np.concatenate([lens, np.zeros(len(lens) % 2, dtype=np.uint8)])
        return 4, ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8).tobytes()
    return 8, lens.tobytes()


def _unpack_lengths(data: bytes, width: int, count: int, alphabet: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if width == 4:
        lens = np.empty(2 * len(raw), dtype=np.uint8)
        lens[0::2], lens[1::2] = raw >> 4, raw & 15
    elif width == 8:
        lens = raw
    else:
        raise ValueError(f"unknown code-length table width {width}")
    if count > len(lens) or count > alphabet:
        raise ValueError(f"code-length table holds {len(lens)} entries, needs {count} (alphabet {alphabet})")
    out = np.zeros(alphabet, dtype=np.uint8)
    out[:count] = lens[:count]
    return out


def _stream_segments(prefix: str, st: huffman.HuffmanStream) -> tuple[dict, dict[str, bytes]]:
    width, table = _pack_lengths(st.lengths)
    count = int(np.flatnonzero(st.lengths)[-1] + 1) if st.lengths.any() else 0
    info = {"alphabet": len(st.lengths), "n": st.n, "nbits": st.nbits, "block": st.block,
            "table": [width, count]}
    segs = {f"{prefix}.lengths": table,
            f"{prefix}.offsets": st.offsets.astype("<u4").tobytes(),
            f"{prefix}.data": st.data}
    return info, segs


def _stream_from(prefix: str, info: dict, segs: dict[str, bytes]) -> huffman.HuffmanStream:
    width, count = info["table"]
    return huffman.HuffmanStream(
        lengths=_unpack_lengths(segs[f"{prefix}.lengths"], int(width), int(count), int(info["alphabet"])),
        data=segs[f"{prefix}.data"],
        offsets=np.frombuffer(segs[f"{prefix}.offsets"], dtype="<u4"),
        n=int(info["n"]), nbits=int(info["nbits"]), block=int(info["block"]))


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _exact_in_half(t: torch.Tensor) -> bool:
    """True when every value of the float32 tensor ``t`` survives a round trip through float16 unchanged."""
    if t.dtype != torch.float32 or t.numel() == 0:
        return False
    h = t.half()
    return bool(torch.isfinite(h).all() == torch.isfinite(t).all()) and torch.equal(h.float(), t)


def encode_raw(key: str, t: torch.Tensor) -> EncodedTensor:
    """Dense little-endian bytes. A float32 tensor whose values are all exact in float16 (for instance batch norm
    rounded by ``DeepConfig(other_dtype="float16")``) is stored in 16 bits with ``"as": "float32"``: lossless."""
    t = t.detach().cpu().contiguous()
    if _exact_in_half(t):
        data = t.half().numpy().astype("<f2").tobytes()
        return EncodedTensor(key, "raw", list(t.shape), "float16", fields={"as": "float32"}, segments={"data": data},
                             stats={"numel": t.numel(), "raw_bits": len(data) * 8, "stored_as": "float16"})
    name = _dtype_name(t)
    if name == "bfloat16":
        data = t.view(torch.int16).numpy().astype("<i2").tobytes()
    elif name in _NP_DTYPES:
        data = t.numpy().astype(np.dtype(_NP_DTYPES[name]).newbyteorder("<")).tobytes()
    else:
        raise ValueError(f"tensor {key!r} has dtype {name}, which the .lnz format cannot store")
    nbits = len(data) * 8
    return EncodedTensor(key, "raw", list(t.shape), name, segments={"data": data},
                         stats={"numel": t.numel(), "raw_bits": nbits})


def encode_tensor(key: str, t: torch.Tensor, *, index_bits: int | None = None, weight_bits: int | str | None = None,
                  block: int | None = None) -> EncodedTensor:
    """Encode one tensor. ``index_bits=None`` stores it raw; otherwise sparse or shared as described above.
    ``weight_bits``: the codebook width allowed (None: never shared; ``"auto"``: shared with the fewest bits
    that hold its distinct non-zero values, when that is smaller than float32 values).

    ``stats`` holds the paper's per-stage sizes for the tensor, in bits: ``dense_bits`` (float32),
    ``pruned_bits`` (entries x (32 + index_bits), stage P), ``shared_bits`` (entries x (weight_bits +
    index_bits) + 32-bit codebook, stage P+Q; only for shared tensors) and ``huffman_bits`` (what the record
    occupies in the file payload, stage P+Q+H).
    """
    t = t.detach().cpu()
    if index_bits is None or not t.is_floating_point() or t.numel() == 0:
        return encode_raw(key, t)
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index bits for {key!r} must be in 1..16, got {index_bits}")
    flat = t.float().flatten().numpy() if t.dtype != torch.float32 else t.flatten().numpy()
    positions = np.flatnonzero(flat)
    values = flat[positions]
    symbols, is_real = relative_indices(positions, index_bits)
    entries = len(symbols)
    span = 1 << index_bits
    stats = {"numel": int(flat.size), "nnz": int(len(positions)), "entries": int(entries),
             "fillers": int(entries - len(positions)), "index_bits": int(index_bits),
             "dense_bits": int(flat.size) * 32, "pruned_bits": int(entries) * (32 + index_bits)}
    gaps = huffman.encode(symbols, span, block)
    ginfo, gsegs = _stream_segments("gaps", gaps)
    index_huff_bits = 8 * sum(len(v) for v in gsegs.values())
    codebook = np.unique(values) if weight_bits and t.dtype == torch.float32 else None
    if weight_bits == "auto" and codebook is not None:
        # share whenever the values already take few distinct levels and a codebook is smaller than floats
        need = max(1, math.ceil(math.log2(len(codebook) + 1)))
        weight_bits = need if need <= 16 and entries * need + 32 * len(codebook) < entries * 32 else None
        codebook = codebook if weight_bits else None
    if codebook is not None and len(codebook) <= (1 << weight_bits) - 1:
        codes_real = np.searchsorted(codebook, values) + 1
        codes = np.zeros(entries, dtype=np.int64)
        codes[is_real] = codes_real
        cst = huffman.encode(codes, len(codebook) + 1, block)
        cinfo, csegs = _stream_segments("codes", cst)
        cb = codebook.astype("<f4").tobytes()
        segs = {"codebook": cb, **gsegs, **csegs}
        weight_huff_bits = 8 * (sum(len(v) for v in csegs.values()) + len(cb))
        stats.update(kind="shared", weight_bits=int(weight_bits), codebook_size=int(len(codebook)),
                     shared_bits=int(entries) * (weight_bits + index_bits) + 32 * len(codebook),
                     index_huffman_bits=index_huff_bits, weight_huffman_bits=weight_huff_bits,
                     huffman_bits=index_huff_bits + weight_huff_bits,
                     index_entropy=huffman.entropy_bits(np.bincount(symbols, minlength=span)),
                     weight_entropy=huffman.entropy_bits(np.bincount(codes, minlength=len(codebook) + 1)))
        return EncodedTensor(key, "shared", list(t.shape), _dtype_name(t),
                             fields={"index_bits": index_bits, "bits": weight_bits, "gaps": ginfo, "codes": cinfo},
                             segments=segs, stats=stats)
    vals = np.zeros(entries, dtype="<f4")
    vals[is_real] = values
    raw_bytes = t.numel() * t.element_size()
    sparse_bytes = sum(len(v) for v in gsegs.values()) + vals.nbytes
    if t.dtype != torch.float32 or sparse_bytes >= raw_bytes:
        enc = encode_raw(key, t)
        enc.stats.update(stats, kind="raw", huffman_bits=enc.stats["raw_bits"])
        return enc
    stats.update(kind="sparse", index_huffman_bits=index_huff_bits, weight_huffman_bits=vals.nbytes * 8,
                 huffman_bits=index_huff_bits + vals.nbytes * 8,
                 index_entropy=huffman.entropy_bits(np.bincount(symbols, minlength=span)))
    return EncodedTensor(key, "sparse", list(t.shape), "float32",
                         fields={"index_bits": index_bits, "gaps": ginfo},
                         segments={**gsegs, "values": vals.tobytes()}, stats=stats)


def decode_tensor(rec: dict, segs: dict[str, bytes]) -> torch.Tensor:
    """Rebuild a tensor from its header record and byte segments (raises ValueError on inconsistent data)."""
    shape = [int(s) for s in rec["shape"]]
    numel = int(np.prod(shape)) if shape else 1
    kind, dtype = rec["kind"], rec["dtype"]
    if kind == "raw":
        data = segs["data"]
        if dtype == "bfloat16":
            arr = np.frombuffer(data, dtype="<i2").copy()
            if arr.size != numel:
                raise ValueError(f"holds {arr.size} values, shape {shape} needs {numel}")
            return torch.from_numpy(arr).view(torch.bfloat16).reshape(shape)
        if dtype not in _NP_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        arr = np.frombuffer(data, dtype=np.dtype(_NP_DTYPES[dtype]).newbyteorder("<"))
        if arr.size != numel:
            raise ValueError(f"holds {arr.size} values, shape {shape} needs {numel}")
        out = torch.from_numpy(arr.astype(_NP_DTYPES[dtype]).copy()).reshape(shape)
        target = rec.get("as")
        if target is not None:  # stored narrower than the model's tensor (exact values): widen back
            if target not in _NP_DTYPES or _NP_DTYPES[target] is None:
                raise ValueError(f"unknown target dtype {target!r}")
            out = out.to(getattr(torch, target))
        return out
    gaps = huffman.decode(_stream_from("gaps", rec["gaps"], segs))
    pos = absolute_positions(gaps)
    if len(pos) and pos[-1] >= numel:
        raise ValueError(f"sparse indices run past the end of a tensor of {numel} values")
    out = np.zeros(numel, dtype=np.float32)
    if kind == "shared":
        codebook = np.frombuffer(segs["codebook"], dtype="<f4")
        codes = huffman.decode(_stream_from("codes", rec["codes"], segs))
        if len(codes) != len(pos):
            raise ValueError(f"{len(codes)} codes for {len(pos)} positions")
        if len(codes) and codes.max() > len(codebook):
            raise ValueError(f"code {codes.max()} outside a codebook of {len(codebook)} values")
        table = np.concatenate([np.zeros(1, dtype=np.float32), codebook.astype(np.float32)])
        out[pos] = table[codes]
    elif kind == "sparse":
        vals = np.frombuffer(segs["values"], dtype="<f4")
        if len(vals) != len(pos):
            raise ValueError(f"{len(vals)} values for {len(pos)} positions")
        out[pos] = vals
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    return torch.from_numpy(out).reshape(shape)
