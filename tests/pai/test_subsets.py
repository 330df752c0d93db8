"""Uniform k-subsets (masktopo.pai.subsets): exact sizes, order, uniformity, resumable draws."""

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from masktopo.pai import subsets
from masktopo.pai.subsets import random_positions, uniform_subset


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(
    "n,k", [(0, 0), (1, 0), (1, 1), (10, 3), (10, 7), (10, 10), (64, 63), (65, 1), (129, 64),
            (5000, 40), (5000, 4990)]
)  # fmt: skip
def test_sizes_order_range(n, k, wide):
    rng = np.random.default_rng(n * 1000 + k)
    for _ in range(5):
        pos = uniform_subset(rng, n, k, wide=wide)
        assert pos.dtype == np.int64 and pos.size == k
        assert np.all(np.diff(pos) > 0)
        if k:
            assert 0 <= pos[0] and pos[-1] < n


@pytest.mark.parametrize("bad", [(5, 6), (5, -1)])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="cannot draw"):
        uniform_subset(np.random.default_rng(0), *bad)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("k", [3, 5])  # 5 of 8: the left-out positions are drawn instead
def test_every_subset_equally_likely(k, wide):
    index = {c: i for i, c in enumerate(combinations(range(8), k))}  # 56 subsets either way
    counts = np.zeros(len(index))
    rng = np.random.default_rng(11 + k + 2 * wide)
    for _ in range(200 * len(index)):
        counts[index[tuple(uniform_subset(rng, 8, k, wide=wide).tolist())]] += 1
    assert counts.min() > 0
    assert chisquare(counts).pvalue > 1e-3
    # a broken sampler (e.g. the first k positions more often) fails this test: a sanity check
    skewed = counts.copy()
    skewed[0] += 0.2 * counts.mean() * len(counts) ** 0.5
    assert chisquare(skewed).pvalue < 1e-3


def test_positions_equally_likely_in_a_large_population():
    n, k, draws = 100_000, 1_000, 200
    rng = np.random.default_rng(3)
    hits = np.zeros(n // 1000)  # positions per block of 1000: expected k * draws / 100 each
    for _ in range(draws):
        hits += np.bincount(uniform_subset(rng, n, k) // 1000, minlength=n // 1000)
    assert hits.sum() == k * draws
    assert chisquare(hits).pvalue > 1e-3


def test_draw_resumes_where_the_words_ran_out():
    """A draw that runs out of random words stops and continues with more: the same subset as
    one call with all the words (what uniform_subset's refill relies on; at n = 1000 every step
    takes exactly one 32-bit half, a rejection has probability n / 2³²)."""
    n, k = 1000, 300
    raw = np.random.default_rng(5).bit_generator.random_raw(k)
    whole, out = np.zeros(16, dtype=np.uint64), np.empty(k, dtype=np.int64)
    assert subsets._floyd32(raw, n, k, 0, whole, out) == k
    parts, out2 = np.zeros(16, dtype=np.uint64), np.empty(k, dtype=np.int64)
    assert subsets._floyd32(raw[:50], n, k, 0, parts, out2) == 100
    assert subsets._floyd32(raw[50:], n, k, 100, parts, out2) == k
    assert np.array_equal(parts, whole) and np.array_equal(out2, out)


def test_wide_draw_resumes_with_fresh_words():
    n, k = 1000, 300
    rng = np.random.default_rng(6)
    bits, out = np.zeros(16, dtype=np.uint64), np.empty(k, dtype=np.int64)
    done = subsets._floyd64(rng.bit_generator.random_raw(100), n, k, 0, bits, out)
    assert 0 < done < 100  # masking to 1023 rejects about a quarter of the words
    while done < k:
        done = subsets._floyd64(rng.bit_generator.random_raw(100), n, k, done, bits, out)
    pos = subsets._read_bits(bits, n, k, False, subsets._DEBRUIJN_INDEX)
    assert pos.size == k and np.all(np.diff(pos) > 0) and pos[-1] < n
    assert np.array_equal(subsets._radix_sort(out, n), pos)  # the set drawn is the bitmap's


@pytest.mark.parametrize("n", [1, 5, 2048, 2049, 5_000_000, 2**33 + 5])
def test_radix_sort_orders_distinct_positions(n):
    """One to four 11-bit passes: the same order as a comparison sort, and the same set as the
    bitmap holds."""
    rng = np.random.default_rng(n % 1000)
    k = min(n, 3000)
    a = np.unique(rng.integers(0, n, size=k))
    rng.shuffle(a)
    got = subsets._radix_sort(a.copy(), n)
    assert np.array_equal(got, np.sort(a))


def test_seeded_and_global_scope():
    g = torch.Generator().manual_seed(7)
    a = random_positions(g, [100, 50, 10], counts=[10, 5, 10])
    g.manual_seed(7)
    b = random_positions(g, [100, 50, 10], counts=[10, 5, 10])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [x.size for x in a] == [10, 5, 10]
    assert np.array_equal(a[2], np.arange(10))
    g.manual_seed(7)
    c = random_positions(g, [100, 50, 10], total=30)
    assert sum(x.size for x in c) == 30
    for x, size in zip(c, [100, 50, 10], strict=True):
        assert np.all(np.diff(x) > 0) and (x.size == 0 or x[-1] < size)
    with pytest.raises(ValueError, match="counts"):
        random_positions(g, [10], counts=[1], total=1)
