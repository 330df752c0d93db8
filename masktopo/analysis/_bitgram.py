r"""The Gram matrix of a binary pattern, and of its normalized matrix, by counting bits.

The dense route (:mod:`masktopo.analysis._dense`) spends most of a spectrum at 30–70 % density
forming the Gram matrix ``A Aᵀ`` of the smaller side (``A`` is ``B`` or ``Bᵀ``, ``s × l``,
``s ≤ l``): a BLAS ``syrk``, ``s²l/2`` multiply–adds. For a binary pattern each entry is the
number of contraction indices two rows share,

.. math::  (A Aᵀ)_{ij} = \sum_k a_{ik} a_{jk} = \operatorname{popcount}(a_i \wedge a_j),

64 of them per AND and population count of two machine words (8 words per instruction where the
CPU has AVX-512 ``VPOPCNTDQ``). For the normalized matrix ``N = D_r^{-1/2} B D_c^{-1/2}``
(degrees ``a`` on the smaller side, ``b`` on the contraction side),

.. math::  (N Nᵀ)_{ij} = \frac{1}{\sqrt{a_i a_j}} \sum_k \frac{a_{ik} a_{jk}}{b_k}
           = \frac{1}{\sqrt{a_i a_j}} \sum_q \frac{1}{b_q}
             \operatorname{popcount}(a_i^{(q)} \wedge a_j^{(q)}),

the contraction indices grouped into *classes* of equal degree ``b_q``, each class packed into
its own words: one count per class and pair, then one multiply–add. The counts are exact
integers; the float64 sums are within a few ulps of BLAS's (a binary pattern's Gram matrix is
exact, as the float32 ``syrk`` it replaces).

On a Llama-2-7B ``down_proj`` pattern (4096 × 11008, 50 % per row; one core of a 2-core AMD
EPYC with AVX-512): the binary Gram matrix in 0.30 s against 2.4 s (float32 ``syrk``), the
normalized one in 0.73 s (200 degree classes) against 3.5 s (float64 ``syrk``);
docs/performance.md, "LLM layers". Many distinct contraction degrees make the classes short and
the per-class sums dominate: :func:`pattern_gram` keeps BLAS (returns None) when the words plus
:data:`CLASS_COST` per class exceed :data:`BLAS_COLUMN_COST` per column of ``l``.

The kernel tiles the pairs so that a tile of the transposed packing (:data:`TILE` rows' words,
contraction-major) stays in the core's L2 cache, and counts two rows against a whole tile per
pass (the loop over the tile is contiguous, so LLVM vectorizes the AND, the count and the sum).
"""

from __future__ import annotations

import numpy as np

from ._engine import Parts
from ._kernels import _jit, is_normalized_pattern

#: Rows of the smaller side per tile of the transposed packing (256 rows × 300 words × 8 bytes:
#: ~600 KB, within a 1 MB L2 cache).
TILE = 256
#: What a degree class costs per pair of rows, in words counted (the sums after its counts;
#: measured on the pattern of the module docstring: 199 classes and 121 words more took 0.43 s,
#: a word 1.7 ms).
CLASS_COST = 0.65
#: What a column of ``l`` costs float64 ``syrk`` per pair of rows, in the same words (3.5 s for
#: 11008 columns). The normalized matrix takes the bit route while
#: ``words + CLASS_COST·classes ≤ BLAS_COLUMN_COST·l``.
BLAS_COLUMN_COST = 0.18


@_jit
def _popcount(x):
    """Set bits of a uint64 (the SWAR count; LLVM emits ``popcnt`` or ``vpopcntq``)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@_jit
def _pack(indptr, indices, n_rows, rows_side, s, bit, words):
    """Bit rows of the smaller side: ``P[i]`` holds bit ``bit[k]`` for each contraction index
    ``k`` adjacent to ``i``. ``rows_side``: the smaller side is the CSR rows (else its
    columns). Returns ``P`` (``s × words``) and its transpose (``words × s``), both C order."""
    P = np.zeros((s, words), dtype=np.uint64)
    one = np.uint64(1)
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            i, k = (r, c) if rows_side else (c, r)
            b = bit[k]
            P[i, b >> 6] |= one << np.uint64(b & 63)
    return P, np.ascontiguousarray(P.T)


@_jit
def _gram_bits(P, PT, class_words, class_weight, scale, tile):
    """``C[i, j] = (scale[i]·scale[j]) Σ_q class_weight[q] · popcount(P[i] ∧ P[j])`` over the
    words ``class_words[q] : class_words[q + 1]`` of class ``q``; symmetric, float64."""
    s = P.shape[0]
    nq = class_weight.size
    C = np.zeros((s, s))
    cnt = np.zeros((2, tile), dtype=np.uint64)
    acc = np.zeros((2, tile))
    for j0 in range(0, s, tile):
        j1 = min(s, j0 + tile)
        n = j1 - j0
        for i in range(0, j1, 2):  # rows i ≤ j of the tile's columns (two at a time)
            i2 = min(i + 1, s - 1)
            acc[:, :n] = 0.0
            for q in range(nq):
                cnt[:, :n] = 0
                for w in range(class_words[q], class_words[q + 1]):
                    x0 = P[i, w]
                    x1 = P[i2, w]
                    row = PT[w, j0:j1]
                    for jj in range(n):
                        y = row[jj]
                        cnt[0, jj] += _popcount(x0 & y)
                        cnt[1, jj] += _popcount(x1 & y)
                wq = class_weight[q]
                for jj in range(n):
                    acc[0, jj] += wq * cnt[0, jj]
                    acc[1, jj] += wq * cnt[1, jj]
            for jj in range(n):
                C[i, j0 + jj] = acc[0, jj] * (scale[i] * scale[j0 + jj])
                C[i2, j0 + jj] = acc[1, jj] * (scale[i2] * scale[j0 + jj])
    for i in range(s):  # the lower triangle from the upper
        for j in range(i):
            C[i, j] = C[j, i]
    return C


def _classes(degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each contraction index's bit position (classes of equal degree, each starting on a word),
    the classes' first words (``q + 1`` entries) and their degrees."""
    values, which = np.unique(degrees, return_inverse=True)
    sizes = np.bincount(which, minlength=values.size)
    class_words = np.zeros(values.size + 1, dtype=np.int64)
    np.cumsum((sizes + 63) // 64, out=class_words[1:])
    order = np.argsort(which, kind="stable")
    rank = np.empty(which.size, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank[order] = np.arange(which.size) - np.repeat(starts, sizes)
    bit = class_words[which] * 64 + rank
    return bit, class_words, values


def bit_route(P: Parts) -> str | None:
    """Whether :func:`pattern_gram` counts ``P``'s Gram matrix in bits: ``"binary"`` (every
    stored entry 1), ``"normalized"`` (exactly the normalized matrix of its pattern,
    :func:`~masktopo.analysis._kernels.normalized_values` bit for bit, when counting is the
    cheaper way: :data:`BLAS_COLUMN_COST`), else None."""
    m, n = P.shape
    if P.nnz == 0 or min(m, n) == 0:
        return None
    if bool((P.data == 1.0).all()):
        return "binary"
    if not is_normalized_pattern(P.indptr, P.indices, P.data, m, n):
        return None
    degrees = np.bincount(P.indices, minlength=n) if m <= n else np.diff(P.indptr)
    classes = np.unique(degrees)
    words = int(((np.bincount(np.searchsorted(classes, degrees)) + 63) // 64).sum())
    if words + CLASS_COST * classes.size > BLAS_COLUMN_COST * max(m, n):
        return None
    return "normalized"


def pattern_gram(P: Parts) -> np.ndarray | None:
    """The Gram matrix of the smaller side of ``P`` counted in bits (:func:`gram_bits`) where
    :func:`bit_route` takes it; None otherwise."""
    kind = bit_route(P)
    return None if kind is None else gram_bits(P, normalized=kind == "normalized")


def gram_bits(P: Parts, normalized: bool) -> np.ndarray:
    """The Gram matrix of the smaller side of ``P``'s pattern, or of its normalized matrix, by
    counting bits (module docstring); whatever ``P``'s values (the caller has checked them).

    Parameters
    ----------
    P : Parts
        The matrix; only its pattern (``indptr``, ``indices``, ``shape``) is read.
    normalized : bool
        The Gram matrix of ``D_r^{-1/2} B D_c^{-1/2}`` (degrees of the pattern) instead of ``B``.

    Returns
    -------
    numpy.ndarray
        ``s × s`` float64, ``s = min(P.shape)``: ``B Bᵀ`` when the rows are the smaller side,
        else ``Bᵀ B``.
    """
    m, n = P.shape
    rows_side = m <= n
    s, l = (m, n) if rows_side else (n, m)
    col_deg = np.bincount(P.indices, minlength=n).astype(np.float64)
    row_deg = np.diff(P.indptr).astype(np.float64)
    side_deg, other_deg = (row_deg, col_deg) if rows_side else (col_deg, row_deg)
    if normalized:
        bit, class_words, degrees = _classes(other_deg)
        with np.errstate(divide="ignore"):  # degree 0: no bits, so any finite value
            weight = np.where(degrees > 0, 1.0 / degrees, 0.0)
            scale = np.where(side_deg > 0, 1.0 / np.sqrt(side_deg), 0.0)
    else:
        bit = np.arange(l, dtype=np.int64)
        class_words = np.array([0, (l + 63) // 64], dtype=np.int64)
        weight, scale = np.ones(1), np.ones(s)
    bits, bits_t = _pack(P.indptr, P.indices, m, rows_side, s, bit, int(class_words[-1]))
    return _gram_bits(bits, bits_t, class_words, weight, scale, TILE)
