r"""Enumeration of sparse supports: Algorithm 1 of Zhang & Papyan (2024), methods-spec §7.3.

An *architecture* is a tuple of layer widths ``(d_0, d_1, ..., d_L)`` (``(2, 3, 3, 3, 1)`` is
the Cubist-Spiral MLP 2-3-3-3-1); matrix ``l`` (``l = 1..L``) has shape ``[d_l, d_{l-1}]``
(PyTorch's ``[out, in]``), the last one is the classifier and stays dense.

Phase 1 (structured)
    every ``(d_1, d_2, d_3) ∈ {1..W}³`` inside the width-``W`` network: the dense sub-network of
    the first ``d_l`` units of each layer (:func:`phase1_archs`, :func:`block_masks`).
Phase 2 (unstructured)
    every support of each hidden matrix with **no empty row and no empty column**, modulo the
    row permutations of that matrix (:func:`matrix_supports`), combined over the hidden
    matrices (:func:`supports`). A support of a ``[r, c]`` matrix is canonical when its rows,
    read as ``c``-bit numbers (column 0 the most significant bit), are ordered by non-increasing
    row nnz and, among equal nnz, by non-decreasing value: the reference's rule.

Counts. With :math:`m_k = 2^{c-k} - 1` the non-empty rows that avoid ``k`` given columns, the
multisets of ``r`` rows covering every column number, by inclusion–exclusion,

.. math:: S(r, c) = \sum_{k=0}^{c} (-1)^k \binom{c}{k} \binom{m_k + r - 1}{r},

and an architecture has :math:`\prod_{l<L} S(d_l, d_{l-1})` supports (:func:`count_supports`):
``S(3, 2) = 8``, ``S(3, 3) = 57``, so 2-3-3-3-1 has 8·57·57 = 25,992 and 2-3-2-2-1 has
8·13·4 = 416, the reference's totals.

Keys. Each matrix's canonical supports are listed by nnz, then lexicographically by their row
values (:func:`matrix_supports`). A network's *index* runs over the per-matrix nnz budgets in
lexicographic order and, within one budget tuple, over the matrices' supports of those budgets
in mixed radix (first matrix most significant): the reference's loop order (per-layer nnz
budgets, then masks).
:class:`SupportKey` ``(arch, index)`` rebuilds the masks; nothing else is stored.

Joint canonicalisation (``joint=True``). A hidden unit is a row of ``W_l`` and a column of
``W_{l+1}``, so per-matrix canonical supports that differ by a relabelling of hidden units are
the same network. The joint option keeps, per orbit of the group
:math:`\prod_l S_{d_l}` (hidden layers), the member of smallest index among its per-matrix
canonical members; every orbit has one (sort the rows of ``W_1``, then of ``W_2``, ...; the
dense classifier is unaffected). 2-3-3-3-1 has 12,400 such networks (of 25,992) and 2-3-2-2-1
has 273 (of 416)
(:func:`count_supports` with ``joint=True``, by brute force over the
:math:`\prod_l d_l!` relabellings).

References
----------
Zhang, S. & Papyan, V. (2024). Sparsest Models Elude Pruning: An Exposé of Pruning's Current
Capabilities. ICML 2024. Code: ``stephenqz/sparsest``, ``combinatorial_search``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..checks import is_integer
from ..errors import MaskValidationError

__all__ = [
    "JOINT_LIMIT",
    "JOINT_SUPPORT_LIMIT",
    "JOINT_WORK_LIMIT",
    "SupportKey",
    "arch_text",
    "block_masks",
    "count_matrix_supports",
    "count_supports",
    "joint_indices",
    "matrix_supports",
    "model_nnz",
    "nnz_ranges",
    "parse_arch",
    "phase1_archs",
    "support_masks",
    "support_weight_nnz",
    "supports",
    "weight_nnz",
]

#: Largest number of hidden-unit relabellings ``∏ d_l!`` the joint canonicalisation tries.
JOINT_LIMIT = 50_000
#: Largest number of supports the joint canonicalisation compares (it holds each in memory,
#: about 300 bytes apiece for 2-3-3-3-1) ...
JOINT_SUPPORT_LIMIT = 5_000_000
#: ... and largest number of (support, relabelling) pairs it tries: about 0.2 µs each, so
#: minutes at the limit (2-3-3-3-1: 25,992 × 216).
JOINT_WORK_LIMIT = 1_000_000_000
#: Largest number of canonical supports of one matrix that is listed explicitly.
MATRIX_LIMIT = 2_000_000


def parse_arch(arch: str | Sequence[int]) -> tuple[int, ...]:
    """``"2-3-3-3-1"`` or ``(2, 3, 3, 3, 1)`` as a tuple of at least two positive widths.

    Raises
    ------
    MaskValidationError
        When a width is not a positive integer, or there are fewer than two.
    """
    if isinstance(arch, str):
        parts = arch.replace(",", "-").split("-")
        try:
            widths = tuple(int(p) for p in parts)
        except ValueError:
            raise MaskValidationError(
                f"architecture {arch!r}: expected widths joined by '-', e.g. 2-3-3-3-1"
            ) from None
    else:
        widths = tuple(arch)
    if len(widths) < 2 or any(not is_integer(w) or w < 1 for w in widths):
        raise MaskValidationError(
            f"architecture {arch!r}: needs at least two positive integer widths, e.g. 2-3-3-3-1"
        )
    return tuple(int(w) for w in widths)


def arch_text(arch: Sequence[int]) -> str:
    """``(2, 3, 3, 3, 1)`` → ``"2-3-3-3-1"``."""
    return "-".join(str(int(w)) for w in arch)


# -- one matrix ----------------------------------------------------------------------------------
def count_matrix_supports(rows: int, cols: int) -> int:
    r"""Canonical supports of a ``[rows, cols]`` matrix with no empty row or column.

    Multisets of ``rows`` non-empty rows covering every column, counted by inclusion–exclusion
    :math:`\sum_k (-1)^k \binom{c}{k}\binom{2^{c-k} - 1 + r - 1}{r}` (module docstring).

    Examples
    --------
    >>> count_matrix_supports(3, 2), count_matrix_supports(3, 3), count_matrix_supports(2, 3)
    (8, 57, 13)
    """
    if rows < 1 or cols < 1:
        raise MaskValidationError(f"a matrix needs positive sizes, got [{rows}, {cols}]")
    total = 0
    for k in range(cols + 1):
        m = 2 ** (cols - k) - 1
        total += (-1) ** k * math.comb(cols, k) * (math.comb(m + rows - 1, rows) if m else 0)
    return total


def _row_order(cols: int) -> list[int]:
    """Non-empty row values of ``cols`` bits in canonical order: nnz descending, value ascending."""
    return sorted(range(1, 2**cols), key=lambda v: (-v.bit_count(), v))


@functools.lru_cache(maxsize=64)
def matrix_supports(rows: int, cols: int) -> np.ndarray:
    """Every canonical support of a ``[rows, cols]`` matrix with no empty row or column.

    Returns
    -------
    numpy.ndarray
        ``int64 [S, rows]``: the row values (column 0 the most significant bit), sorted by nnz,
        then lexicographically; ``S = count_matrix_supports(rows, cols)``. Read-only (cached).

    Raises
    ------
    MaskValidationError
        When there are more than ``MATRIX_LIMIT`` supports (count them with
        :func:`count_matrix_supports` instead).
    """
    n = count_matrix_supports(rows, cols)
    if n > MATRIX_LIMIT:
        raise MaskValidationError(
            f"a [{rows}, {cols}] matrix has {n:,} canonical supports, more than the "
            f"{MATRIX_LIMIT:,} that are listed explicitly"
        )
    order = _row_order(cols)
    full = 2**cols - 1
    found = []
    for combo in itertools.combinations_with_replacement(order, rows):
        cover = 0
        for v in combo:
            cover |= v
        if cover == full:
            found.append((sum(v.bit_count() for v in combo), combo))
    found.sort(key=lambda t: t[0])  # stable: lexicographic order (in canonical row order) kept
    out = np.array([c for _, c in found], dtype=np.int64).reshape(len(found), rows)
    out.setflags(write=False)
    return out


def _bits(values: np.ndarray, cols: int) -> np.ndarray:
    """Row values → bool matrices (column 0 the most significant bit), shape ``[..., cols]``."""
    shifts = np.arange(cols - 1, -1, -1, dtype=np.int64)
    return ((values[..., None] >> shifts) & 1).astype(bool)


# -- networks --------------------------------------------------------------------------------------
def _radices(arch: tuple[int, ...]) -> list[int]:
    return [count_matrix_supports(arch[i + 1], arch[i]) for i in range(len(arch) - 2)]


def count_supports(arch: str | Sequence[int], *, joint: bool = False) -> int:
    """Number of phase-2 supports of ``arch`` (the classifier dense).

    Parameters
    ----------
    arch : str or sequence of int
        Layer widths, ``(2, 3, 3, 3, 1)`` or ``"2-3-3-3-1"``.
    joint : bool
        Count networks modulo hidden-unit relabellings across layers (module docstring);
        enumerates, so only for small architectures (``∏ d_l! ≤ JOINT_LIMIT``).

    Examples
    --------
    >>> count_supports((2, 3, 3, 3, 1)), count_supports((2, 3, 2, 2, 1))
    (25992, 416)
    """
    arch = parse_arch(arch)
    if joint:
        return len(joint_indices(arch))
    return math.prod(_radices(arch))


@dataclass(frozen=True, order=True)
class SupportKey:
    """The enumeration key of one phase-2 support: the architecture and its index.

    ``str(key)`` is ``"2-3-3-3-1#12345"``; :meth:`parse` reads it back.
    """

    arch: tuple[int, ...]
    index: int

    def __post_init__(self):
        object.__setattr__(self, "arch", parse_arch(self.arch))
        n = count_supports(self.arch)
        if not 0 <= int(self.index) < n:
            raise MaskValidationError(
                f"support index {self.index} out of range for {arch_text(self.arch)} (0 .. {n - 1})"
            )
        object.__setattr__(self, "index", int(self.index))

    def __str__(self) -> str:
        return f"{arch_text(self.arch)}#{self.index}"

    @classmethod
    def parse(cls, text: str) -> SupportKey:
        arch, sep, index = text.partition("#")
        if not sep or not index.isdigit():
            raise MaskValidationError(f"support key {text!r}: expected ARCH#INDEX")
        return cls(parse_arch(arch), int(index))

    @property
    def positions(self) -> tuple[int, ...]:
        """Position of each hidden matrix's support in :func:`matrix_supports`."""
        return tuple(int(p[0]) for p in _positions(self.arch, np.array([self.index])))

    @property
    def layer_nnz(self) -> tuple[int, ...]:
        """Nonzeros of each masked (hidden) matrix."""
        a = self.arch
        return tuple(
            int(sum(int(v).bit_count() for v in matrix_supports(a[i + 1], a[i])[p]))
            for i, p in enumerate(self.positions)
        )

    def masks(self) -> list[np.ndarray]:
        """The bool masks ``[d_l, d_{l-1}]`` of every matrix, the dense classifier last."""
        a = self.arch
        out = [
            _bits(matrix_supports(a[i + 1], a[i])[p], a[i]) for i, p in enumerate(self.positions)
        ]
        out.append(np.ones((a[-1], a[-2]), dtype=bool))
        return out


def weight_nnz(arch: Sequence[int], layer_nnz: Sequence[int]) -> int:
    """Weight nonzeros: the masked matrices' nnz plus the dense classifier's ``d_L·d_{L-1}``."""
    return int(sum(layer_nnz)) + int(arch[-1]) * int(arch[-2])


def model_nnz(arch: Sequence[int], layer_nnz: Sequence[int]) -> int:
    """Weight nonzeros plus one bias per non-input unit (no unit of a phase-2 support is dead:
    every hidden unit has an in-edge and an out-edge)."""
    return weight_nnz(arch, layer_nnz) + int(sum(arch[1:]))


def supports(
    arch: str | Sequence[int],
    *,
    start: int = 0,
    stop: int | None = None,
    joint: bool = False,
) -> Iterator[SupportKey]:
    """The phase-2 supports of ``arch`` in index order, deterministically, as keys.

    ``key.masks()`` rebuilds a support's masks; :func:`support_masks` builds a whole range as
    stacked arrays. ``start``/``stop`` select indices ``start <= index < stop``.

    Examples
    --------
    >>> keys = list(supports((2, 3, 2, 2, 1)))
    >>> len(keys), str(keys[0]), keys[0].layer_nnz
    (416, '2-3-2-2-1#0', (3, 3, 2))
    """
    arch = parse_arch(arch)
    n = count_supports(arch)
    stop = n if stop is None else min(int(stop), n)
    if joint:
        idx = joint_indices(arch)
        for i in idx[(idx >= start) & (idx < stop)]:
            yield SupportKey(arch, int(i))
        return
    for i in range(int(start), stop):
        yield SupportKey(arch, i)


@functools.lru_cache(maxsize=64)
def _budget_table(arch: tuple[int, ...]):
    """The per-layer nnz budgets of ``arch`` in lexicographic order, with, per budget tuple,
    the index of its first support, and per layer the start and size of each budget's group."""
    groups = []  # per layer: {nnz: (start, size)}
    for i in range(len(arch) - 2):
        rows = matrix_supports(arch[i + 1], arch[i])
        nnz = _bits(rows, arch[i]).sum(axis=(1, 2))
        vals, starts, sizes = np.unique(nnz, return_index=True, return_counts=True)
        groups.append(
            {int(v): (int(a), int(c)) for v, a, c in zip(vals, starts, sizes, strict=True)}
        )
    tuples = list(itertools.product(*(sorted(g) for g in groups)))
    sizes = [math.prod(g[n][1] for g, n in zip(groups, t, strict=True)) for t in tuples]
    if sum(sizes) >= 2**63:
        raise MaskValidationError(
            f"{arch_text(arch)} has {sum(sizes):,} supports: their indices do not fit in int64"
        )
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    return tuples, offsets, groups


def nnz_ranges(arch: str | Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The support indices of ``arch`` as consecutive ranges of one weight nnz each.

    The index runs over the per-matrix nnz budgets (module docstring), so the supports of one
    budget tuple are a contiguous index range, all with the same weight nnz: what lets a search
    select by weight nnz without listing every support.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``int64`` starts, sizes and weight nnz (:func:`support_weight_nnz`) of the ranges, in
        index order; the starts run from 0 and each range ends where the next starts.

    Examples
    --------
    >>> starts, sizes, nnz = nnz_ranges((2, 3, 2, 2, 1))
    >>> int(starts[0]), int(sizes.sum()), int(nnz[0])
    (0, 416, 10)
    """
    arch = parse_arch(arch)
    tuples, offsets, _ = _budget_table(arch)
    dense = arch[-1] * arch[-2]
    nnz = np.array([sum(t) + dense for t in tuples], dtype=np.int64).reshape(len(tuples))
    return offsets[:-1].copy(), np.diff(offsets), nnz


def _positions(arch: tuple[int, ...], index: np.ndarray) -> list[np.ndarray]:
    """Each matrix's position in :func:`matrix_supports` for the supports ``index``: the index
    runs over the nnz-budget tuples in lexicographic order, then over the tuple's masks in
    mixed radix (first matrix most significant)."""
    tuples, offsets, groups = _budget_table(arch)
    index = np.asarray(index, dtype=np.int64)
    t = np.searchsorted(offsets, index, side="right") - 1
    rest = index - offsets[t]
    out = [np.zeros_like(index) for _ in groups]
    for layer in range(len(groups) - 1, -1, -1):
        start = np.array([groups[layer][tp[layer]][0] for tp in tuples], dtype=np.int64)
        size = np.array([groups[layer][tp[layer]][1] for tp in tuples], dtype=np.int64)
        out[layer] = start[t] + rest % size[t]
        rest = rest // size[t]
    return out


def _index_of(arch: tuple[int, ...], positions: Sequence[np.ndarray]) -> np.ndarray:
    """The inverse of :func:`_positions`: support indices from per-matrix positions."""
    _, offsets, groups = _budget_table(arch)
    nnz_of = []
    for i in range(len(groups)):
        rows = matrix_supports(arch[i + 1], arch[i])
        nnz_of.append(_bits(rows, arch[i]).sum(axis=(1, 2)))
    t = np.zeros_like(positions[0])
    local = np.zeros_like(positions[0])
    for i, pos in enumerate(positions):
        vals = sorted(groups[i])
        code = np.searchsorted(np.array(vals), nnz_of[i][pos])
        t = t * len(vals) + code
        start = np.array([groups[i][v][0] for v in vals], dtype=np.int64)[code]
        size = np.array([groups[i][v][1] for v in vals], dtype=np.int64)[code]
        local = local * size + (pos - start)
    return offsets[t] + local


def support_weight_nnz(arch: str | Sequence[int], index: Sequence[int] | np.ndarray) -> np.ndarray:
    """Weight nnz (masked matrices plus the dense classifier) of the supports ``index``."""
    arch = parse_arch(arch)
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    total = np.full(len(index), arch[-1] * arch[-2], dtype=np.int64)
    for i, pos in enumerate(_positions(arch, index)):
        rows = matrix_supports(arch[i + 1], arch[i])
        per = _bits(rows, arch[i]).sum(axis=(1, 2))
        total += per[pos]
    return total


def support_masks(arch: str | Sequence[int], index: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Stacked masks of the supports ``index`` of ``arch``: bool ``[B, d_l, d_{l-1}]`` per
    matrix, the dense classifier last (the same as ``SupportKey(arch, i).masks()`` for each i).
    """
    arch = parse_arch(arch)
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    n = count_supports(arch)
    if index.size and (index.min() < 0 or index.max() >= n):
        raise MaskValidationError(
            f"support index out of range for {arch_text(arch)} (0 .. {n - 1})"
        )
    out = []
    for i, pos in enumerate(_positions(arch, index)):
        out.append(_bits(matrix_supports(arch[i + 1], arch[i])[pos], arch[i]))
    out.append(np.ones((len(index), arch[-1], arch[-2]), dtype=bool))
    return out


# -- joint canonicalisation ------------------------------------------------------------------------
def _permute_columns(values: np.ndarray, cols: int, perm: Sequence[int]) -> np.ndarray:
    """Row values after the columns are relabelled: new column ``j`` is old column ``perm[j]``."""
    bits = _bits(values, cols)[..., list(perm)]
    weights = 1 << np.arange(cols - 1, -1, -1, dtype=np.int64)
    return (bits * weights).sum(-1)


def _rank_code(rk: np.ndarray, base: int) -> np.ndarray:
    """Row-rank tuples ``[..., r]`` as mixed-radix integers (first row most significant)."""
    code = np.zeros(rk.shape[:-1], dtype=np.int64)
    for j in range(rk.shape[-1]):
        code = code * base + rk[..., j]
    return code


@functools.lru_cache(maxsize=16)
def joint_indices(arch: str | Sequence[int]) -> np.ndarray:
    """Indices of the jointly canonical supports of ``arch`` (module docstring), ascending.

    For every relabelling of the hidden units (a permutation per hidden layer), the permuted
    network's matrices are re-read; an index is kept iff no relabelling maps it to a per-matrix
    canonical support of smaller index. Vectorised over the supports, looped over the
    :math:`\\prod_l d_l!` relabellings.

    Raises
    ------
    MaskValidationError
        When :math:`\\prod_l d_l!` exceeds ``JOINT_LIMIT``, the supports ``JOINT_SUPPORT_LIMIT``
        or their product ``JOINT_WORK_LIMIT`` (checked before anything is listed).
    """
    arch = parse_arch(arch)
    hidden = arch[1:-1]
    n_perm = math.prod(math.factorial(d) for d in hidden)
    if n_perm > JOINT_LIMIT:
        raise MaskValidationError(
            f"joint canonicalisation of {arch_text(arch)} would try {n_perm:,} relabellings "
            f"(more than {JOINT_LIMIT:,}); use per-matrix canonical supports"
        )
    n = count_supports(arch)
    if n > JOINT_SUPPORT_LIMIT or n * n_perm > JOINT_WORK_LIMIT:
        raise MaskValidationError(
            f"joint canonicalisation of {arch_text(arch)} would compare {n:,} supports under "
            f"{n_perm:,} relabellings (at most {JOINT_SUPPORT_LIMIT:,} supports and "
            f"{JOINT_WORK_LIMIT:,} pairs); use per-matrix canonical supports"
        )
    index = np.arange(n, dtype=np.int64)
    pos = _positions(arch, index)
    mats = [matrix_supports(arch[i + 1], arch[i]) for i in range(len(arch) - 2)]
    rows = [m[p] for m, p in zip(mats, pos, strict=True)]  # [n, d_l] row values per matrix
    # canonical row rank: position of a value in the canonical row order
    rank = [np.empty(2 ** arch[i], dtype=np.int64) for i in range(len(arch) - 2)]
    for i, r in enumerate(rank):
        r[_row_order(arch[i])] = np.arange(2 ** arch[i] - 1)
    # position of a canonical row tuple in its matrix list, by its row ranks in mixed radix
    lookup = []
    for i, m in enumerate(mats):
        base = 2 ** arch[i] - 1
        table = np.full(base ** m.shape[1], -1, dtype=np.int64)
        table[_rank_code(rank[i][m], base)] = np.arange(len(m))
        lookup.append(table)
    best = index.copy()
    for perms in itertools.product(*(itertools.permutations(range(d)) for d in hidden)):
        if all(p == tuple(range(len(p))) for p in perms):
            continue
        new_pos = []
        ok = np.ones(n, dtype=bool)
        for i, r in enumerate(rows):
            v = r[:, list(perms[i])]  # rows relabelled by this layer's permutation
            if i > 0:  # columns relabelled by the previous hidden layer's permutation
                v = _permute_columns(v, arch[i], perms[i - 1])
            rk = rank[i][v]
            ok &= np.all(rk[:, 1:] >= rk[:, :-1], axis=1)
            p = lookup[i][_rank_code(rk, 2 ** arch[i] - 1)]
            new_pos.append(np.where(p < 0, 0, p))
        new_index = _index_of(arch, new_pos)
        # the classifier is dense: relabelling its columns changes nothing
        ok &= new_index < best
        best = np.where(ok, new_index, best)
    out = index[best == index]
    out.setflags(write=False)
    return out


# -- phase 1 ----------------------------------------------------------------------------------------
def phase1_archs(max_width: int = 16, *, d_in: int = 2, d_out: int = 1,
                 count: int | None = None) -> list[tuple[int, ...]]:  # fmt: skip
    """Every ``(d_in, d_1, d_2, d_3, d_out)`` with ``1 <= d_l <= max_width``, ``d_1`` slowest
    (the first ``count`` of them when given: never the whole ``max_width³`` list then).

    Examples
    --------
    >>> archs = phase1_archs(16)
    >>> len(archs), archs[0], archs[-1]
    (4096, (2, 1, 1, 1, 1), (2, 16, 16, 16, 1))
    """
    if max_width < 1:
        raise MaskValidationError(f"max_width must be >= 1, got {max_width}")
    r = range(1, int(max_width) + 1)
    return [(d_in, a, b, c, d_out)
            for a, b, c in itertools.islice(itertools.product(r, r, r), count)]  # fmt: skip


def block_masks(
    archs: Sequence[Sequence[int]], width: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Phase-1 masks inside the width-``width`` network: ones on the top-left blocks.

    Returns
    -------
    (list of numpy.ndarray, list of numpy.ndarray)
        Weight masks bool ``[B, out, in]`` and bias masks bool ``[B, out]`` per layer of the
        container ``(d_in, width, ..., width, d_out)``.
    """
    archs = [parse_arch(a) for a in archs]
    depth = {len(a) for a in archs}
    if len(depth) != 1:
        raise MaskValidationError("phase-1 architectures must all have the same depth")
    (L,) = depth
    outer = [archs[0][0], *([width] * (L - 2)), archs[0][-1]]
    wm, bm = [], []
    for i in range(L - 1):
        w = np.zeros((len(archs), outer[i + 1], outer[i]), dtype=bool)
        b = np.zeros((len(archs), outer[i + 1]), dtype=bool)
        for k, a in enumerate(archs):
            if max(a[1:-1]) > width:
                raise MaskValidationError(f"{arch_text(a)} does not fit in width {width}")
            w[k, : a[i + 1], : a[i]] = True
            b[k, : a[i + 1]] = True
        wm.append(w)
        bm.append(b)
    return wm, bm
