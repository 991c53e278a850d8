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

from ..errors import LnzFormatError, LnzLimitError
from . import huffman

__all__ = ["relative_indices", "absolute_positions", "encode_tensor", "decode_tensor", "EncodedTensor",
           "RecordSpec", "check_record", "decode_checked"]

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


def _stream_segments(prefix: str, st: huffman.HuffmanStream) -> tuple[dict, dict[str, bytes]]:
    width, table = _pack_lengths(st.lengths)
    count = int(np.flatnonzero(st.lengths)[-1] + 1) if st.lengths.any() else 0
    info = {"alphabet": len(st.lengths), "n": st.n, "nbits": st.nbits, "block": st.block,
            "table": [width, count]}
    segs = {f"{prefix}.lengths": table,
            f"{prefix}.offsets": st.offsets.astype("<u4").tobytes(),
            f"{prefix}.data": st.data}
    return info, segs


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


# ------------------------------------------------------------------------------------------------ decoding
#
# A record is checked field by field against what the encoder writes before anything is allocated (check_record),
# and its decoded streams against the canonical form (_decode_stream, _check_entries), so that a file whose CRCs
# were recomputed after an edit either decodes to a tensor the encoder could have written or is refused.

_FIELDS = {
    "raw": {"key", "kind", "shape", "dtype", "as", "seg"},
    "sparse": {"key", "kind", "shape", "dtype", "index_bits", "gaps", "seg"},
    "shared": {"key", "kind", "shape", "dtype", "index_bits", "bits", "gaps", "codes", "seg"},
}
_OPTIONAL = {"as", "seg"}
_STREAM = ("lengths", "offsets", "data")
_SEGMENTS = {
    "raw": {"data"},
    "sparse": {f"gaps.{s}" for s in _STREAM} | {"values"},
    "shared": {f"{p}.{s}" for p in ("gaps", "codes") for s in _STREAM} | {"codebook"},
}
_MAX_NDIM = 16
# Decoded bytes allowed per byte of input: Deep Compression reaches ~50x (paper Table 1), so 1024x is never a real
# file; small inputs get a fixed allowance instead (an all-zero layer costs nothing to store).
MAX_EXPANSION = 1024
MIN_DECODE_BUDGET = 64 << 20


def decode_budget(input_bytes: int) -> int:
    """The most bytes of tensors ``input_bytes`` of encoded data may decode to."""
    return max(MIN_DECODE_BUDGET, MAX_EXPANSION * input_bytes)


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(_NP_DTYPES[dtype]).itemsize


@dataclass
class RecordSpec:
    """A checked record: what it decodes to, and the validated stream descriptors."""

    key: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    dtype: str  # as stored
    out_dtype: str  # as decoded (``as`` widens float16 to float32)
    index_bits: int = 0
    streams: dict = field(default_factory=dict)  # prefix -> {alphabet, n, nbits, block, width, count}

    @property
    def out_bytes(self) -> int:
        return self.numel * _itemsize(self.out_dtype)


def _int(value, what: str, lo: int, hi: int, fail) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise fail(f"{what} is {value!r}; expected an integer in {lo} .. {hi}")
    return value


def _check_stream(info, prefix: str, alphabet: int, why: str, numel: int, lens: dict, fail) -> dict:
    """Every size of a Huffman stream descriptor is implied by the others and by its segments: check them all."""
    want = {"alphabet", "n", "nbits", "block", "table"}
    if not isinstance(info, dict) or set(info) != want:
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise fail(f"stream {prefix!r} is {got}; expected the fields {sorted(want)}")
    if info["alphabet"] != alphabet or type(info["alphabet"]) is not int:
        raise fail(f"{prefix}.alphabet is {info['alphabet']!r}; {why} makes it {alphabet}")
    n = _int(info["n"], f"{prefix}.n", 0, numel, fail)  # entries sit at distinct positions of the tensor
    nbits = _int(info["nbits"], f"{prefix}.nbits", n, n * huffman.MAX_CODE_LEN, fail)
    block = _int(info["block"], f"{prefix}.block", 1, huffman.auto_block(n), fail)
    table = info["table"]
    if not (isinstance(table, list) and len(table) == 2 and table[0] in (4, 8) and type(table[0]) is int):
        raise fail(f"{prefix}.table is {table!r}; expected [4 or 8, count]")
    width = table[0]
    count = _int(table[1], f"{prefix}.table count", 1 if n else 0, alphabet if n else 0, fail)
    sizes = {"lengths": (count + 1) // 2 if width == 4 else count, "offsets": 4 * -(-n // block),
             "data": -(-nbits // 8)}
    for seg, size in sizes.items():
        if lens[f"{prefix}.{seg}"] != size:
            raise fail(f"segment '{prefix}.{seg}' holds {lens[f'{prefix}.{seg}']} bytes; the stream's fields "
                       f"(n={n}, nbits={nbits}, block={block}, table={table}) make it {size}")
    return {"alphabet": alphabet, "n": n, "nbits": nbits, "block": block, "width": width, "count": count}


def check_record(rec, lens: dict[str, int]) -> RecordSpec:
    """Validate one header record against its segments' lengths ``lens``; raises :class:`LnzFormatError`
    naming the tensor and the field. Nothing is allocated here: sizes are all known up front."""
    if not isinstance(rec, dict):
        raise LnzFormatError(f"a record is a {type(rec).__name__}, not a mapping")
    key = rec.get("key")
    if not isinstance(key, str) or not key:
        raise LnzFormatError(f"a record has key {key!r}; expected a state-dict name")

    def fail(what: str) -> LnzFormatError:
        return LnzFormatError(f"tensor {key!r}: {what}")

    kind = rec.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise fail(f"unknown record kind {kind!r} (raw, sparse or shared)")
    if set(rec) - _FIELDS[kind] or _FIELDS[kind] - _OPTIONAL - set(rec):
        raise fail(f"a {kind} record has fields {sorted(rec)}; expected {sorted(_FIELDS[kind] - _OPTIONAL)} "
                   f"(and optionally {sorted(_FIELDS[kind] & _OPTIONAL)})")
    shape = rec["shape"]
    if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM and all(type(d) is int and d >= 0 for d in shape)):
        raise fail(f"shape {shape!r} is not a list of at most {_MAX_NDIM} non-negative integers")
    numel = math.prod(shape)
    dtype = rec["dtype"]
    if not isinstance(dtype, str) or dtype not in _NP_DTYPES:
        raise fail(f"unknown dtype {dtype!r}")
    if set(lens) != _SEGMENTS[kind]:
        raise fail(f"a {kind} record has segments {sorted(lens)}; expected {sorted(_SEGMENTS[kind])}")
    if kind == "raw":
        target = rec.get("as")
        if "as" in rec and (dtype, target) != ("float16", "float32"):
            raise fail(f"'as': {target!r} on a {dtype} record; only float16 data widens (to float32)")
        if lens["data"] != numel * _itemsize(dtype):
            raise fail(f"segment 'data' holds {lens['data']} bytes; shape {shape} of {dtype} needs "
                       f"{numel * _itemsize(dtype)}")
        return RecordSpec(key, kind, tuple(shape), numel, dtype, target or dtype)
    if dtype != "float32" or "as" in rec:
        raise fail(f"a {kind} record holds a float32 weight, not {dtype}" + (" with 'as'" if "as" in rec else ""))
    ib = _int(rec["index_bits"], "index_bits", 1, 16, fail)
    spec = RecordSpec(key, kind, tuple(shape), numel, dtype, dtype, ib)
    spec.streams["gaps"] = gaps = _check_stream(rec["gaps"], "gaps", 1 << ib, f"index_bits={ib}", numel, lens, fail)
    if kind == "sparse":
        if lens["values"] != 4 * gaps["n"]:
            raise fail(f"segment 'values' holds {lens['values']} bytes; {gaps['n']} entries need {4 * gaps['n']}")
        return spec
    bits = _int(rec["bits"], "bits", 1, 32, fail)
    if lens["codebook"] % 4:
        raise fail(f"segment 'codebook' holds {lens['codebook']} bytes, not a whole number of float32 values")
    k = lens["codebook"] // 4
    if k > min((1 << bits) - 1, gaps["n"]):  # every shared value is used by at least one entry
        raise fail(f"codebook of {k} values for {gaps['n']} entries and bits={bits} (at most 2^bits - 1 values)")
    spec.streams["codes"] = codes = _check_stream(rec["codes"], "codes", k + 1, f"a codebook of {k} values", numel,
                                                  lens, fail)
    if codes["n"] != gaps["n"]:
        raise fail(f"{codes['n']} codes for {gaps['n']} entries")
    return spec


def _decode_stream(spec: RecordSpec, prefix: str, segs: dict[str, bytes], fail) -> np.ndarray:
    st = spec.streams[prefix]
    raw = np.frombuffer(segs[f"{prefix}.lengths"], dtype=np.uint8)
    if st["width"] == 4:
        lens = np.empty(2 * len(raw), dtype=np.uint8)
        lens[0::2], lens[1::2] = raw >> 4, raw & 15
    else:
        lens = raw
    if lens[st["count"]:].any():
        raise fail(f"{prefix}: the code-length table's padding nibble is not zero")
    lengths = np.zeros(st["alphabet"], dtype=np.uint8)
    lengths[:st["count"]] = lens[:st["count"]]
    data = segs[f"{prefix}.data"]
    if st["nbits"] % 8 and data[-1] & ((1 << (8 - st["nbits"] % 8)) - 1):
        raise fail(f"{prefix}: the padding bits after the last code are not zero")
    stream = huffman.HuffmanStream(lengths=lengths, data=data, offsets=np.frombuffer(segs[f"{prefix}.offsets"], "<u4"),
                                   n=st["n"], nbits=st["nbits"], block=st["block"])
    try:
        symbols = huffman.decode(stream)
    except ValueError as e:
        raise fail(f"{prefix}: {e}") from None
    if not st["n"]:
        return symbols
    counts = np.bincount(symbols, minlength=st["alphabet"])
    if np.any((lengths > 0) & (counts == 0)):
        raise fail(f"{prefix}: the code-length table gives codes to symbols the stream never uses")
    if int((counts * lengths).sum()) != int((counts * huffman.code_lengths(counts)).sum()):
        raise fail(f"{prefix}: the code lengths are not Huffman-optimal for the stream's symbols")
    return symbols


def _check_entries(spec: RecordSpec, gaps: np.ndarray, zero: np.ndarray, fail) -> np.ndarray:
    """Entries in canonical form (as :func:`relative_indices` writes them): a zero entry is a filler, exactly
    2^index_bits past the previous one, and the last entry is a real one. Returns the flat positions."""
    pos = absolute_positions(gaps)
    if len(pos) and pos[-1] >= spec.numel:
        raise fail(f"sparse indices run past the end of a tensor of {spec.numel} values")
    if np.any(gaps[zero] != (1 << spec.index_bits) - 1):
        raise fail("a zero entry that is not a filler (fillers sit exactly 2^index_bits past the previous entry)")
    if len(zero) and zero[-1]:
        raise fail("the last entry is a filler (fillers only bridge gaps before a real entry)")
    return pos


def _decode_raw(spec: RecordSpec, data: bytes, fail) -> torch.Tensor:
    if spec.dtype == "bfloat16":
        arr = np.frombuffer(data, dtype="<i2").copy()
        return torch.from_numpy(arr).view(torch.bfloat16).reshape(spec.shape)
    np_dtype = _NP_DTYPES[spec.dtype]
    arr = np.frombuffer(data, dtype=np.dtype(np_dtype).newbyteorder("<"))
    if spec.dtype == "bool":
        if np.any(np.frombuffer(data, dtype=np.uint8) > 1):
            raise fail("bool data holds bytes other than 0 and 1")
    out = torch.from_numpy(arr.astype(np_dtype).copy()).reshape(spec.shape)
    return out.to(getattr(torch, spec.out_dtype)) if spec.out_dtype != spec.dtype else out


def decode_checked(spec: RecordSpec, segs: dict[str, bytes]) -> torch.Tensor:
    """Decode a record checked by :func:`check_record`; raises :class:`LnzFormatError` if its content is not in
    the canonical form the encoder writes."""

    def fail(what: str) -> LnzFormatError:
        return LnzFormatError(f"tensor {spec.key!r}: {what}")

    if spec.kind == "raw":
        return _decode_raw(spec, segs["data"], fail)
    gaps = _decode_stream(spec, "gaps", segs, fail)
    out = np.zeros(spec.numel, dtype=np.float32)
    if spec.kind == "shared":
        codebook = np.frombuffer(segs["codebook"], dtype="<f4").astype(np.float32)
        finite = codebook[~np.isnan(codebook)]
        if not (np.all(finite[1:] > finite[:-1]) and np.all(finite != 0) and len(codebook) - len(finite) <= 1
                and (len(finite) == len(codebook) or np.isnan(codebook[-1]))):
            raise fail("the codebook is not strictly ascending non-zero values (at most one NaN, last)")
        codes = _decode_stream(spec, "codes", segs, fail)
        pos = _check_entries(spec, gaps, codes == 0, fail)
        if len(codes) and np.any(np.bincount(codes, minlength=len(codebook) + 1)[1:] == 0):
            raise fail("a codebook value no entry uses")
        out[pos] = np.concatenate([np.zeros(1, dtype=np.float32), codebook])[codes]
    else:
        values = np.frombuffer(segs["values"], dtype="<f4")
        bits = values.view("<u4")
        zero = (bits & 0x7FFFFFFF) == 0
        if np.any(bits[zero]):
            raise fail("a filler entry holds -0.0 (fillers are +0.0)")
        pos = _check_entries(spec, gaps, zero, fail)
        out[pos] = values
    return torch.from_numpy(out).reshape(spec.shape)


def decode_tensor(rec: dict, segs: dict[str, bytes]) -> torch.Tensor:
    """Rebuild a tensor from its header record and byte segments; raises :class:`LnzFormatError` (a
    ``ValueError``) naming the tensor on any inconsistency."""
    lens = {k: len(v) for k, v in segs.items()}
    spec = check_record(rec, lens)
    if spec.out_bytes > decode_budget(sum(lens.values())):
        raise LnzLimitError(f"tensor {spec.key!r}: shape {list(spec.shape)} decodes to {spec.out_bytes:,} bytes, more "
                            f"than {sum(lens.values()):,} bytes of segments can encode")
    return decode_checked(spec, segs)
