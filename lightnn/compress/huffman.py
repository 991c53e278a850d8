"""Canonical Huffman coding of integer symbol streams (Deep Compression stage 3, Han et al. 2016, Sec. 4).

Deep Compression Huffman-codes two streams per layer: the codebook indices of the surviving weights and the
relative sparse indices (gaps). Both are skewed (gaps are mostly small; centroids near zero are most common),
so a variable-length prefix code saves 20-30% over fixed-width codes.

This module is numpy only:

- :func:`code_lengths` computes optimal (Huffman) code lengths from symbol counts;
- :func:`canonical_codes` turns lengths into canonical codes (sorted by length, then symbol), so a decoder
  needs only the lengths, never the tree;
- :func:`encode` writes a bit stream with :func:`numpy.packbits`, vectorized over symbols; it also records the
  bit offset of every ``block``-th symbol (block about sqrt(8n), see :func:`auto_block`) so that :func:`decode` can decode all blocks in lock-step (one
  vectorized step per symbol position within a block instead of one Python step per symbol). The offsets cost
  32 bits per block (0.008 to 0.5 bits per symbol) and are counted in the file size.

Decoding uses the canonical-code property that codes left-justified to ``max_len`` bits are increasing in
(length, symbol) order, so the symbol under a ``max_len``-bit window is found by ``searchsorted``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["code_lengths", "canonical_codes", "encode", "decode", "HuffmanStream", "entropy_bits"]

MAX_CODE_LEN = 57  # windows are 64-bit words shifted by up to 7 bits; Huffman lengths this long need > 10^11 symbols


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal prefix-code lengths for symbol ``counts`` (Huffman 1952); absent symbols get length 0.

    A stream with one distinct symbol gets a 1-bit code (a 0-bit code could not say how many symbols there are
    apart from the count, which we store anyway, but a 1-bit code keeps the decoder uniform).
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    if len(present) == 0:
        return lengths
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    # heap of (weight, tiebreak, symbols-in-subtree); merging two subtrees deepens every leaf in both by one
    heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(present)]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        lengths[s1] += 1
        lengths[s2] += 1
        # merge the smaller list into the larger so the total work stays O(n log n)
        merged = s1 + s2 if len(s1) >= len(s2) else s2 + s1
        heapq.heappush(heap, (w1 + w2, tie, merged))
        tie += 1
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical prefix codes (as integers) for the given lengths: shorter codes first, ties by symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.max(initial=0) > MAX_CODE_LEN:
        raise ValueError(f"Huffman code length {int(lengths.max())} exceeds {MAX_CODE_LEN}")
    codes = np.zeros(len(lengths), dtype=np.uint64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    code, prev = 0, 0
    for i, s in enumerate(order):
        ln = int(lengths[s])
        if i:
            code = (code + 1) << (ln - prev)
        else:
            code = 0
        codes[s] = code
        prev = ln
    return codes


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy of the empirical distribution, in bits per symbol (the lower bound Huffman approaches)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.sum() == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass
class HuffmanStream:
    """An encoded stream: code lengths per symbol, the packed bits, and block start offsets (in bits)."""

    lengths: np.ndarray  # uint8, one per alphabet symbol (0 = symbol absent)
    data: bytes  # packed bits, MSB first
    offsets: np.ndarray  # uint32 bit offset of symbol k * block
    n: int  # number of symbols
    nbits: int  # payload bits (excluding padding)
    block: int


def auto_block(n: int) -> int:
    """Block length for ``n`` symbols: about sqrt(8n), a power of two in [64, 4096], balancing decode steps
    (one per symbol of a block) against offset storage (32 bits per block)."""
    return int(min(4096, max(64, 2 ** math.ceil(math.log2(math.sqrt(8 * max(1, n)))))))


def encode(symbols: np.ndarray, alphabet: int, block: int | None = None) -> HuffmanStream:
    """Huffman-encode integer ``symbols`` in ``[0, alphabet)`` with a canonical code built from their counts.
    ``block`` (default :func:`auto_block`, also the largest allowed) is how many symbols share one recorded start
    offset."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    block = auto_block(len(symbols)) if block is None else int(block)
    if not 1 <= block <= auto_block(len(symbols)):
        # decoding takes min(block, n) sequential steps: a longer block only slows the decoder down
        raise ValueError(f"block must be in 1 .. {auto_block(len(symbols))} for {len(symbols)} symbols, got {block}")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet}), got [{symbols.min()}, {symbols.max()}]")
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    sym_len = lengths[symbols]
    sym_code = codes[symbols]
    nbits = int(sym_len.sum())
    starts = np.cumsum(sym_len) - sym_len
    bits = np.zeros(nbits + 7, dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        m = sym_len > j  # bit j (from the top) of every code at least j+1 long
        shift = (sym_len[m] - 1 - j).astype(np.uint64)
        bits[starts[m] + j] = ((sym_code[m] >> shift) & np.uint64(1)).astype(np.uint8)
    data = np.packbits(bits[:nbits]).tobytes() if nbits else b""
    offsets = starts[::block].astype(np.uint32) if len(symbols) else np.zeros(0, dtype=np.uint32)
    if nbits >= 2**32:
        raise ValueError("a single Huffman stream longer than 2^32 bits is not supported")
    return HuffmanStream(lengths.astype(np.uint8), data, offsets, len(symbols), nbits, block)


def decode(stream: HuffmanStream) -> np.ndarray:
    """Decode a :class:`HuffmanStream` back to its symbols (int64); raises ValueError on inconsistent streams.
    Work and memory are bounded by the stream's own bytes: ``n <= nbits <= 8 len(data)`` and
    ``block <= auto_block(n)`` are checked before anything is allocated."""
    n, block = stream.n, stream.block
    if n == 0:
        if stream.nbits or len(stream.offsets):
            raise ValueError("an empty Huffman stream must have no bits and no block offsets")
        return np.zeros(0, dtype=np.int64)
    if not n <= stream.nbits <= len(stream.data) * 8:
        raise ValueError(f"Huffman stream of {n} symbols records {stream.nbits} bits in {len(stream.data)} bytes "
                         f"(every symbol takes at least one bit)")
    if not 1 <= block <= auto_block(n):
        raise ValueError(f"Huffman block length {block} outside 1 .. {auto_block(n)} for {n} symbols")
    lengths = np.asarray(stream.lengths, dtype=np.int64)
    max_len = int(lengths.max(initial=0))
    if max_len == 0 or max_len > MAX_CODE_LEN:
        raise ValueError(f"invalid Huffman table (longest code {max_len} bits)")
    kraft = float(np.sum(2.0 ** -lengths[lengths > 0]))
    if kraft > 1.0 + 1e-12:
        raise ValueError("invalid Huffman table (code lengths violate the Kraft inequality)")
    codes = canonical_codes(lengths)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    # canonical codes left-justified to max_len bits are increasing in this order
    just = (codes[order] << (max_len - lengths[order]).astype(np.uint64)).astype(np.uint64)
    sym_of = order
    len_of = lengths[order]
    n_blocks = (n + block - 1) // block
    offsets = np.asarray(stream.offsets, dtype=np.int64)
    if len(offsets) != n_blocks:
        raise ValueError(f"Huffman stream has {len(offsets)} block offsets, expected {n_blocks}")
    if offsets[0] != 0:
        raise ValueError("the first Huffman block must start at bit 0")
    # the big-endian 64-bit word starting at every byte: one gather + two shifts read any max_len-bit window
    buf = np.frombuffer(stream.data + b"\0" * 8, dtype=np.uint8).astype(np.uint64)
    nb = len(stream.data) + 1
    words = np.zeros(nb, dtype=np.uint64)
    for k in range(8):
        words = (words << np.uint64(8)) | buf[k:k + nb]
    out = np.zeros(n_blocks * block, dtype=np.int64)
    pos = offsets.copy()
    if len(pos) and pos.max() > stream.nbits:
        raise ValueError("Huffman block offsets point past the end of the stream")
    # the last block may be partial: its lanes past n decode padding, which is dropped below
    limit = len(stream.data) * 8
    n_last = n - (n_blocks - 1) * block
    last_end = -1
    top = np.uint64(64 - max_len)
    for step in range(min(block, n)):
        word = (words[pos >> 3] << (pos & 7).astype(np.uint64)) >> top
        idx = np.searchsorted(just, word, side="right") - 1
        out[step::block][: len(pos)] = sym_of[idx]
        pos = np.minimum(pos + len_of[idx], limit)
        if step + 1 == n_last:
            last_end = int(pos[-1])
    # every block must end exactly where the next begins, and the last at the recorded bit length
    if not (np.array_equal(pos[:-1], offsets[1:]) and last_end == stream.nbits):
        raise ValueError("Huffman stream does not decode to its recorded block boundaries (corrupt data)")
    return out[:n]
