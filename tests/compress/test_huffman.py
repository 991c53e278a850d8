"""Huffman coding (Deep Compression stage 3): optimal code lengths, canonical codes, bit-exact round trips."""

import itertools

import numpy as np
import pytest

from lightnn.compress.huffman import canonical_codes, code_lengths, decode, encode, entropy_bits


def test_dyadic_probabilities_give_exact_lengths():
    # p = 1/2, 1/4, 1/8, 1/16, 1/16: Huffman lengths are exactly -log2 p and the mean equals the entropy
    counts = np.array([8, 4, 2, 1, 1])
    lengths = code_lengths(counts)
    assert lengths.tolist() == [1, 2, 3, 4, 4]
    assert np.isclose((counts * lengths).sum() / counts.sum(), entropy_bits(counts))


def test_textbook_example_is_optimal():
    # CLRS 16.3: frequencies a..f = 45 13 12 16 9 5 -> lengths 1 3 3 3 4 4, cost 224
    counts = np.array([45, 13, 12, 16, 9, 5])
    lengths = code_lengths(counts)
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4]
    assert int((counts * lengths).sum()) == 224


def _brute_force_optimal_cost(counts):
    # optimal prefix-code cost = min over complete binary trees; for <= 5 symbols enumerate length vectors
    best = None
    n = len(counts)
    for ls in itertools.product(range(1, n), repeat=n):
        if sum(2.0 ** -l for l in ls) <= 1.0:
            c = sum(a * b for a, b in zip(counts, ls))
            best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_lengths_match_brute_force_and_entropy_bounds(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 100, size=5)
    lengths = code_lengths(counts)
    assert int((counts * lengths).sum()) == _brute_force_optimal_cost(counts.tolist())
    mean = (counts * lengths).sum() / counts.sum()
    h = entropy_bits(counts)
    assert h - 1e-12 <= mean < h + 1
    assert np.isclose(np.sum(2.0 ** -lengths.astype(float)), 1.0)  # a complete code (Kraft equality)


def test_canonical_codes_are_prefix_free():
    lengths = code_lengths(np.array([40, 1, 3, 7, 7, 0, 22, 2, 2]))
    codes = canonical_codes(lengths)
    words = [format(int(c), f"0{l}b") for c, l in zip(codes, lengths) if l > 0]
    for a, b in itertools.permutations(words, 2):
        assert not b.startswith(a)


@pytest.mark.parametrize("n,alphabet,block", [(0, 4, None), (1, 4, None), (7, 1, None), (1000, 2, 16),
                                              (5000, 32, None), (20000, 256, 512), (333, 9, 7)])
def test_round_trip_is_exact(n, alphabet, block):
    rng = np.random.default_rng(n)
    sym = np.minimum(rng.geometric(0.25, size=n) - 1, alphabet - 1)
    st = encode(sym, alphabet, block)
    assert st.nbits == int((code_lengths(np.bincount(sym, minlength=alphabet))[sym]).sum())
    assert np.array_equal(decode(st), sym)


def test_long_codes_round_trip():
    # Fibonacci counts give the deepest possible tree: lengths up to alphabet - 1
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    assert code_lengths(counts).max() == len(fib) - 1
    sym = np.repeat(np.arange(len(fib)), np.minimum(counts, 50))
    np.random.default_rng(0).shuffle(sym)
    st = encode(sym, len(fib))
    assert np.array_equal(decode(st), sym)


def test_corrupt_stream_is_detected():
    sym = np.random.default_rng(1).integers(0, 16, size=3000)
    st = encode(sym, 16, 256)
    st.data = st.data[:-40]
    with pytest.raises(ValueError):
        decode(st)
