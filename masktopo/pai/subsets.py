r"""Uniformly random k-subsets, drawn as ascending positions: the random PaI methods' masks.

The random methods (ERK, ER, uniform, random) keep ``k`` entries of a layer (or ``k`` of all
pruned entries, global scope) chosen uniformly among the ``C(n, k)`` subsets. PAGS re-draws them
for every candidate (:mod:`masktopo.pags.sampling`), so this is a hot path: a ResNet-18 candidate
at 1 % density is about 110 000 positions in 21 layers.

:func:`uniform_subset` uses Floyd's algorithm [BF87]_: for ``j = n − k, …, n − 1`` draw ``t``
uniform in ``[0, j]``; add ``t`` to the set, or ``j`` when ``t`` is already in it. Every k-subset
comes out with probability ``1 / C(n, k)`` (induction on ``j``: [BF87]_). The set is a bitmap of
``n`` bits (no hash table) and the positions drawn are put in ascending order by a radix sort
(when ``k > n / 2`` the ``n − k`` dropped positions are drawn instead and the kept ones are the
clear bits of the bitmap). The random integers come from numpy's bit generator (the halves of
its raw 64-bit words, each turned into a bounded integer by Lemire's multiply-and-reject method
[L19]_, exactly uniform); the loops are compiled (numba).

The positions depend only on the generator's state: a seeded generator gives the same subset on
every machine.

References
----------
.. [BF87] J. Bentley, R. Floyd, "Programming pearls: a sample of brilliance", Communications of
   the ACM 30(9), 1987, pp. 754–757.
.. [L19] D. Lemire, "Fast random integer generation in an interval", ACM Transactions on
   Modeling and Computer Simulation 29(1), 2019, article 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True, error_model="numpy")
_U32 = np.uint64(0xFFFFFFFF)
# de Bruijn sequence and table: the index of a 64-bit word's lowest set bit by one product
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_INDEX = np.zeros(64, dtype=np.int64)
for _i in range(64):
    _DEBRUIJN_INDEX[(((1 << _i) * 0x03F79D71B4CB0A89) % 2**64) >> 58] = _i


@_jit
def _half(raw, h):
    """32-bit word ``h`` of the uint64 words ``raw`` (low half first)."""
    return (raw[h >> 1] >> np.uint64(32 * (h & 1))) & _U32


@_jit
def _add(bits, t, j):
    """Floyd's insertion into the bitmap ``bits``: ``t``, or ``j`` when ``t`` is in the set
    already (``j`` never is); returns the position added."""
    if (bits[t >> 6] >> np.uint64(t & 63)) & np.uint64(1):
        t = j
    bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
    return t


@_jit
def _floyd32(raw, n, k, start, bits, out):
    """Floyd's steps ``start …`` of a ``k``-subset of ``[0, n)`` into ``bits`` (``n ≤ 2³²``),
    the position added at step ``i`` into ``out[i]``; one bounded integer per step from the
    32-bit halves of the uint64 ``raw`` words (Lemire: ``⌊x·s / 2³²⌋`` for the range size ``s``,
    rejecting the ``2³² mod s`` low products that would bias it). Returns the next step; less
    than ``k`` when the words ran out."""
    w = 0
    nw = 2 * raw.size
    i = start
    while i < k:
        j = n - k + i
        s = np.uint64(j + 1)
        if w >= nw:
            return i
        m = _half(raw, w) * s
        w += 1
        low = m & _U32
        if low < s:
            floor = ((_U32 + np.uint64(1)) - s) % s  # 2³² mod s
            ok = low >= floor
            while not ok:
                if w >= nw:
                    return i
                m = _half(raw, w) * s
                w += 1
                ok = (m & _U32) >= floor
        out[i] = _add(bits, np.int64(m >> np.uint64(32)), j)
        i += 1
    return i


@_jit
def _floyd64(words, n, k, start, bits, out):
    """:func:`_floyd32` for any ``n`` (whole uint64 ``words``; the bounded integer by masking
    to the next power of two and rejecting values past the range: at most two words per step
    on average)."""
    w = 0
    nw = words.size
    i = start
    while i < k:
        j = n - k + i
        mask = np.uint64(j)
        mask |= mask >> np.uint64(1)
        mask |= mask >> np.uint64(2)
        mask |= mask >> np.uint64(4)
        mask |= mask >> np.uint64(8)
        mask |= mask >> np.uint64(16)
        mask |= mask >> np.uint64(32)
        while True:
            if w >= nw:
                return i
            x = words[w] & mask
            w += 1
            if x <= np.uint64(j):
                break
        out[i] = _add(bits, np.int64(x), j)
        i += 1
    return i


@_jit
def _radix_sort(a, n):
    """``a`` (distinct int64 values in ``[0, n)``) in ascending order: least-significant-digit
    radix sort, the bits of ``n − 1`` in passes of at most 11 (no comparisons, so no
    mispredicted branches: faster than reading the bitmap out, even for small layers)."""
    k = a.size
    src = a
    dst = np.empty(k, dtype=np.int64)
    width = 1  # bits of the largest value, split evenly into passes of at most 11 bits
    while (n - 1) >> width > 0:
        width += 1
    passes = (width + 10) // 11
    digit = (width + passes - 1) // passes
    mask = (1 << digit) - 1
    count = np.empty(mask + 2, dtype=np.int64)
    for p in range(passes):
        shift = p * digit
        count[:] = 0
        for i in range(k):
            count[((src[i] >> shift) & mask) + 1] += 1
        for i in range(mask + 1):
            count[i + 1] += count[i]
        for i in range(k):
            d = (src[i] >> shift) & mask
            dst[count[d]] = src[i]
            count[d] += 1
        src, dst = dst, src
    return src


@_jit
def _read_bits(bits, n, count, invert, table):
    """The set bits of ``bits`` below ``n`` (the clear ones with ``invert``), ascending; there
    are ``count`` of them."""
    out = np.empty(count, dtype=np.int64)
    c = 0
    last = (n - 1) >> 6 if n else -1
    for wi in range(last + 1):
        x = bits[wi]
        if invert:
            x = ~x
            if wi == last and n & 63:
                x &= (np.uint64(1) << np.uint64(n & 63)) - np.uint64(1)
        base = wi << 6
        while x:
            low = x & (~x + np.uint64(1))
            out[c] = base + table[np.int64((low * _DEBRUIJN) >> np.uint64(58))]
            c += 1
            x ^= low
    return out


def uniform_subset(rng: np.random.Generator, n: int, k: int, *, wide: bool | None = None):
    """``k`` distinct positions of ``[0, n)``, uniformly among the k-subsets, ascending (int64).

    Parameters
    ----------
    rng : numpy.random.Generator
        The randomness (advanced by the draw).
    n, k : int
        Population size and subset size, ``0 ≤ k ≤ n``.
    wide : bool, optional
        Draw the bounded integers from 64-bit words (needed when ``n > 2³²``; the default picks
        it then). For tests of that path on small ``n``.

    Returns
    -------
    numpy.ndarray
        Ascending int64 positions.
    """
    n, k = int(n), int(k)
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw {k} of {n} positions")
    if k == n:
        return np.arange(n, dtype=np.int64)
    invert = k > n - k  # draw the positions left out instead
    draw = n - k if invert else k
    bits = np.zeros((n + 63) // 64, dtype=np.uint64)
    out = np.empty(draw, dtype=np.int64)
    wide = n > 2**32 if wide is None else bool(wide)
    done = 0
    while done < draw:
        left = draw - done
        extra = left // 16 + 16  # rejections are rare: a refill almost never happens
        if wide:
            raw = rng.bit_generator.random_raw(2 * left + extra)
            done = _floyd64(raw, n, draw, done, bits, out)
        else:
            raw = rng.bit_generator.random_raw((left + extra + 1) // 2)
            done = _floyd32(raw, n, draw, done, bits, out)
    if invert:  # the positions not drawn: the clear bits
        return _read_bits(bits, n, k, True, _DEBRUIJN_INDEX)
    return _radix_sort(out, n)


def random_positions(generator, sizes: Sequence[int], counts=None, total=None) -> list:
    """The kept positions of a random PaI mask over layers of ``sizes`` entries.

    ``counts[i]`` uniformly random entries of layer ``i`` (layer-wise methods), or ``total``
    uniformly random entries of all layers together (global scope): exactly one of the two.
    The randomness is one draw of the torch ``generator`` (a 62-bit seed for numpy's
    generator), so a mask depends only on the generator's state.

    Returns
    -------
    list of numpy.ndarray
        Per layer, ascending int64 flat positions.
    """
    import torch

    sizes = [int(s) for s in sizes]
    if (counts is None) == (total is None):
        raise ValueError("give counts (per layer) or total (global scope)")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    rng = np.random.default_rng(seed)
    if counts is not None:
        return [uniform_subset(rng, s, int(c)) for s, c in zip(sizes, counts, strict=True)]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    flat = uniform_subset(rng, int(offsets[-1]), int(total))
    cut = np.searchsorted(flat, offsets)
    return [flat[cut[i] : cut[i + 1]] - offsets[i] for i in range(len(sizes))]
