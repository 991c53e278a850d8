"""A seeded, structure-aware fuzzer of the ``.lnz`` decoder (used by tests/test_file_safety.py).

It encodes a small LeNet-5 with every record kind (shared, sparse, raw, float16 widened to float32), parses the
file into preamble, JSON header and payload segments, and applies one mutation per input. The structure-aware
classes edit a field and then recompute every CRC, so the edit reaches the decoder; ``raw-bytes`` edits bytes and
leaves the CRCs alone. Each input is loaded with :func:`lightnn.compress.load` and classified as ``identical``
(decoded to exactly the encoder's weights and model), the name of the :class:`~lightnn.errors.LightnnError`
subclass that refused it, or ``DIFFERENT`` (decoded to other weights: a bug). Anything else raised propagates.

Not mutated with recomputed CRCs: the bytes that *are* the weights (raw tensor data, sparse values, codebooks,
Huffman code bits). Any value there is a valid weight; the CRCs stop accidental damage to them, which the
``raw-bytes`` class covers.
"""

from __future__ import annotations

import copy
import json
import random
import struct
import resource
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

import lightnn
from lightnn.compress import MagnitudePruner, finalize_sharing, load, round_others_to_half, save_lnz, share_weights
from lightnn.errors import LightnnError
from lightnn.models import model_name

_PRE = struct.Struct("<8sHHIQIII")
SUBJECT = {"name": "lenet5", "num_classes": 10, "in_chans": 1, "img_size": 16}


def subject(path: Path, seed: int = 0) -> tuple[bytes, torch.nn.Module]:
    """Write the fuzzed file: conv weights pruned + shared (shared records), the first fc layer pruned (sparse),
    the classifier dense (raw float32), biases rounded to float16 (raw float16 with ``as: float32``)."""
    torch.manual_seed(seed)
    kw = {k: v for k, v in SUBJECT.items() if k != "name"}
    model = lightnn.create_model(SUBJECT["name"], **kw)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.normal_()
    MagnitudePruner(model, {"features.0": 0.5, "features.3": 0.8, "pre_logits.1": 0.95}).update()
    share_weights(model, {"features.0": 4, "features.3": 5})
    finalize_sharing(model)
    round_others_to_half(model)
    save_lnz(path, model, weight_bits={"features.0": 4, "features.3": 5},
             meta={"normalize": {"mean": [0.5], "std": [0.25]}}, block=16)  # short blocks: fast decoding
    return path.read_bytes(), model.eval()


class Parsed:
    """A .lnz file split into its parts; :meth:`pack` reassembles it with fresh CRCs."""

    def __init__(self, blob: bytes):
        _, self.version, self.flags, hlen, plen, *_ = _PRE.unpack_from(blob)
        self.header = json.loads(zlib.decompress(blob[_PRE.size:_PRE.size + hlen]))
        self.payload = bytearray(blob[_PRE.size + hlen:])

    def pack(self, header: Any = None, *, raw_header: bytes | None = None, version: int | None = None,
             flags: int | None = None, lengths: tuple[int, int] | None = None) -> bytes:
        hb = raw_header if raw_header is not None else zlib.compress(
            json.dumps(self.header if header is None else header, separators=(",", ":")).encode(), 9)
        hl, pl = lengths or (len(hb), len(self.payload))
        pre = struct.pack("<8sHHIQII", b"\x89LNZ\r\n\x1a\n", self.version if version is None else version,
                          self.flags if flags is None else flags, hl, pl, zlib.crc32(hb), zlib.crc32(self.payload))
        return pre + struct.pack("<I", zlib.crc32(pre)) + hb + bytes(self.payload)


# values that probe bounds and types; the huge ones are the resource-exhaustion cases
INTS = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 255, 256, 4096, 65535, 65536, 1048586, 2**31,
        2**32 + 1, 2**40, 2**63, -1, -2**31]
JUNK = [None, True, False, "", "x", "10", 1.5, -0.0, float("inf"), float("nan"), 1e308, [], [1], {}, {"a": 1}]


def _value(rng: random.Random) -> Any:
    return rng.choice(INTS) if rng.random() < 0.6 else copy.deepcopy(rng.choice(JUNK))


def _near(rng: random.Random, v: Any) -> Any:
    """A value close to ``v`` (an integer off by a little), or one of the probes."""
    if type(v) is int and rng.random() < 0.6:
        return rng.choice([v + 1, v - 1, v + 2, v * 2, v // 2, v + 8, v - 8, 0, v * 1024])
    return _value(rng)


def _records(rng: random.Random, h: dict, kinds: tuple[str, ...] = ("raw", "sparse", "shared")) -> dict:
    return rng.choice([r for r in h["records"] if r.get("kind") in kinds])


def m_preamble(rng: random.Random, f: Parsed) -> bytes:
    hb = zlib.compress(json.dumps(f.header, separators=(",", ":")).encode(), 9)
    what = rng.randrange(4)
    if what == 0:
        return f.pack(version=rng.choice([0, 2, 3, 255, 65535]))
    if what == 1:
        return f.pack(flags=f.flags | (1 << rng.randrange(1, 16)))
    dh, dp = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1), (5, -5), (-7, 7), (2**20, 0), (0, 2**40)])
    return f.pack(lengths=(max(0, len(hb) + dh), max(0, len(f.payload) + dp)))


def m_arch(rng: random.Random, f: Parsed) -> bytes:
    h = f.header
    what = rng.randrange(5)
    if what == 0:
        h["model"] = rng.choice(["resnet20", "vgg16", "lenet_300_100", "mobilenet_v2", "no_such_model", 5, None, "",
                                 "lenet5" * 50])
    elif what == 1:
        key = rng.choice(sorted(h["arch_kwargs"]) + ["width", "depth", "bogus", "1x"])
        h["arch_kwargs"][key] = _near(rng, h["arch_kwargs"].get(key, 10))
    elif what == 2:
        h["arch_kwargs"] = rng.choice([[], "num_classes=10", None, 5, {"num_classes": {"n": 10}}])
    elif what == 3:
        h["transforms"] = rng.choice([[{"kind": "channels"}], [{"kind": "nope"}], [5], "x", None,
                                      [{"kind": "blocks", "removed": ["features.9"]}],
                                      [{"kind": "lowrank", "ranks": {"classifier": 4}}],
                                      [{"kind": "lowrank", "ranks": {"classifier": 2**40}}]])
    else:
        h.setdefault("meta", {})["normalize"] = rng.choice([{"mean": [0.5], "std": [0.0]}, {"mean": [0.5]}, [1],
                                                            {"mean": ["a"], "std": [1]}, None, {"mean": [], "std": []}])
    return f.pack()


def m_shape(rng: random.Random, f: Parsed) -> bytes:
    rec = _records(rng, f.header)
    shape = rec["shape"]
    what = rng.randrange(6)
    if what == 0 and shape:
        i = rng.randrange(len(shape))
        shape[i] = _near(rng, shape[i])
    elif what == 1:
        shape.append(rng.choice([1, 2, 0]))
    elif what == 2 and shape:
        shape.pop(rng.randrange(len(shape)))
    elif what == 3:
        shape.reverse()
    elif what == 4 and shape:
        i = rng.randrange(len(shape))
        shape[i] = rng.choice([2**20, 2**31, 2**40, 2**62])
    else:
        rec["shape"] = _value(rng)
    return f.pack()


def m_stream(rng: random.Random, f: Parsed) -> bytes:
    rec = _records(rng, f.header, ("sparse", "shared"))
    what = rng.randrange(4)
    if what == 0:
        field = rng.choice(["index_bits", "bits"] if rec["kind"] == "shared" else ["index_bits"])
        rec[field] = _near(rng, rec[field])
    else:
        info = rec[rng.choice(["gaps", "codes"] if rec["kind"] == "shared" else ["gaps"])]
        field = rng.choice(["alphabet", "n", "nbits", "block", "table", "table"])
        if field == "table":
            i = rng.randrange(2)
            info["table"][i] = _near(rng, info["table"][i])
        else:
            info[field] = _near(rng, info[field])
    return f.pack()


def m_segments(rng: random.Random, f: Parsed) -> bytes:
    recs = f.header["records"]
    rec = rng.choice(recs)
    names = list(rec["seg"])
    name = rng.choice(names)
    what = rng.randrange(6)
    if what == 0:
        rec["seg"][name][rng.randrange(2)] = _near(rng, rec["seg"][name][0])
    elif what == 1:  # alias another segment's bytes
        other = rng.choice(recs)
        rec["seg"][name] = list(other["seg"][rng.choice(list(other["seg"]))])
    elif what == 2 and len(names) > 1:  # swap two ranges
        a, b = rng.sample(names, 2)
        rec["seg"][a], rec["seg"][b] = rec["seg"][b], rec["seg"][a]
    elif what == 3:
        del rec["seg"][name]
    elif what == 4:
        rec["seg"][name + rng.choice(["x", ".data", ""])] = rec["seg"].pop(name)
    else:
        rec["seg"][name] = _value(rng)
    return f.pack()


def m_dtype(rng: random.Random, f: Parsed) -> bytes:
    rec = _records(rng, f.header)
    dtypes = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
              "complex64", "float8", 5, None]
    what = rng.randrange(3)
    if what == 0:
        rec["dtype"] = rng.choice(dtypes)
    elif what == 1:
        if "as" in rec and rng.random() < 0.3:
            del rec["as"]
        else:
            rec["as"] = rng.choice(dtypes)
    else:
        rec["kind"] = rng.choice(["raw", "sparse", "shared", "dense", None])
    return f.pack()


def m_fields(rng: random.Random, f: Parsed) -> bytes:
    recs = f.header["records"]
    i = rng.randrange(len(recs))
    rec = recs[i]
    what = rng.randrange(7)
    if what == 0:
        rec["key"] = rng.choice([r["key"] for r in recs] + ["features.1.weight", "", 5, None])
    elif what == 1:
        del rec[rng.choice(sorted(rec))]
    elif what == 2:
        rec[rng.choice(["extra", "scale", "as", "bits", "codes", "index_bits"])] = _value(rng)
    elif what == 3:
        del recs[i]
    elif what == 4:
        recs.insert(rng.randrange(len(recs) + 1), copy.deepcopy(rec))
    elif what == 5:
        j = rng.randrange(len(recs))
        recs[i], recs[j] = recs[j], recs[i]
    else:
        f.header[rng.choice(["records", "format", "extra", "meta"])] = _value(rng)
    return f.pack()


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def m_json(rng: random.Random, f: Parsed) -> bytes:
    path = rng.choice(_paths(f.header)[1:])
    node = f.header
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = _near(rng, node[path[-1]])
    return f.pack()


def m_header_bytes(rng: random.Random, f: Parsed) -> bytes:
    text = json.dumps(f.header, separators=(",", ":")).encode()
    what = rng.randrange(4)
    if what == 0:  # a stored (uncompressed) header with flag bit 0 clear: a valid file
        return f.pack(raw_header=text, flags=0)
    if what == 1:  # a compressed header without the flag: the JSON parser sees zlib bytes
        return f.pack(raw_header=zlib.compress(text, 9), flags=0)
    hb = bytearray(zlib.compress(text, 9))
    if what == 2:
        for _ in range(rng.randint(1, 4)):
            hb[rng.randrange(len(hb))] ^= 1 << rng.randrange(8)
    else:
        hb += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return f.pack(raw_header=bytes(hb))


def m_payload_structure(rng: random.Random, f: Parsed) -> bytes:
    """Bytes of the code-length tables and block offsets (implied by the weights), CRCs recomputed."""
    segs = [ol for r in f.header["records"] for name, ol in r["seg"].items()
            if name.endswith((".lengths", ".offsets")) and ol[1]]
    off, ln = rng.choice(segs)
    for _ in range(rng.randint(1, 3)):
        i = off + rng.randrange(ln)
        f.payload[i] = rng.randrange(256) if rng.random() < 0.3 else f.payload[i] ^ (1 << rng.randrange(8))
    return f.pack()


def m_raw_bytes(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    what = rng.randrange(5)
    if what == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif what == 1:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif what == 2:
        del b[rng.randrange(len(b)):]
    elif what == 3:
        b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    else:
        del b[rng.randrange(len(b))]
    return bytes(b)


MUTATORS: dict[str, Callable] = {
    "preamble": m_preamble, "arch": m_arch, "shape": m_shape, "stream": m_stream, "segments": m_segments,
    "dtype": m_dtype, "fields": m_fields, "json-any": m_json, "header-bytes": m_header_bytes,
    "payload-structure": m_payload_structure, "raw-bytes": m_raw_bytes,
}


def _identical(model: torch.nn.Module, ref: torch.nn.Module) -> bool:
    a, b = model.state_dict(), ref.state_dict()
    return (model_name(model, "") == model_name(ref) and sorted(a) == sorted(b)
            and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                    and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8))
                    for k in a))


def classify(path: Path, ref: torch.nn.Module) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load(path)
    except LightnnError as e:
        return type(e).__name__
    return "identical" if _identical(model, ref) else "DIFFERENT"


class PeakRss:
    """Peak resident memory of this process inside a ``with`` block, above what it held when the block began. On
    Linux the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so the figure is exact;
    elsewhere it is the growth of ``ru_maxrss``, which stays 0 while an earlier peak was higher."""

    growth: int = 0

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def __enter__(self) -> "PeakRss":
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = self._status("VmHWM") is not None
        except OSError:
            self.exact = False
        self.start = self._status("VmRSS") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        end = self._status("VmHWM") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.growth = max(0, end - self.start)


def fuzz(workdir: Path, per_class: int, seed: int) -> dict:
    """Run ``per_class`` inputs of every mutation class. Returns ``{"counts": {class: {outcome: n}},
    "max_seconds": the slowest input, "peak_rss_growth": bytes above the starting resident memory,
    "examples": {"class:outcome": first such input}}``."""
    blob, ref = subject(workdir / "subject.lnz")
    rng = random.Random(seed)
    target = workdir / "input.lnz"
    counts: dict[str, Counter] = {}
    examples: dict[str, bytes] = {}
    slowest = 0.0
    with PeakRss() as rss:
        for name, mutate in MUTATORS.items():
            counts[name] = Counter()
            for _ in range(per_class):
                data = mutate(rng, blob) if name == "raw-bytes" else mutate(rng, Parsed(blob))
                target.write_bytes(data)
                t0 = time.perf_counter()
                outcome = classify(target, ref)
                slowest = max(slowest, time.perf_counter() - t0)
                counts[name][outcome] += 1
                examples.setdefault(f"{name}:{outcome}", data)
    return {"counts": {k: dict(sorted(v.items())) for k, v in counts.items()}, "max_seconds": slowest,
            "peak_rss_growth": rss.growth, "examples": examples}
