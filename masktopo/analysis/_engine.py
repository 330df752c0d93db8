"""The CPU engine behind :func:`masktopo.analysis.spectral.solve_many` (numpy, scipy, numba).

Kept free of torch so that a worker process can import it cheaply. Matrices travel as light
:class:`Parts` (CSR arrays plus shape) to avoid scipy's per-object overhead, which dominates when a
network yields hundreds of small IMDB subgraphs; :func:`solve_top2` hands them all to the compiled
kernel of :mod:`masktopo.analysis._kernels` in one call.

Exactness: every σ comes from an exact method (a dense Gram eigen-decomposition, or Lanczos with
partial reorthogonalization (Simon) on each connected component, stopped on a residual bound of
``TOL·σ₁²``), finished with a Rayleigh–Ritz step, so small σ keep an absolute accuracy of about
``ε·σ₁``. ``TOL = 1e-10``: at ``1e-8`` the σ of 90 %-sparse ResNet-50 layers (where σ₂ and σ₃
are close) were off by up to 3.6e-13 relative to ARPACK, at ``1e-10`` by 1.6e-14, for 10–25 %
more time (docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse

#: Matrices whose smaller side is at most this are solved densely; larger ones by Lanczos.
DENSE_MAX_SIDE = 24
#: Lanczos residual tolerance, relative to σ₁²: ``β_k·|s_k| ≤ TOL·σ₁²`` for both top pairs.
TOL = 1e-10
#: Lanczos steps per run (per connected component) before a matrix is handed to ARPACK.
MAX_STEPS = 600


class Parts(NamedTuple):
    """A CSR matrix as plain arrays: float64 ``data``, int32 ``indices`` and ``indptr``."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @classmethod
    def of(cls, M) -> Parts:
        """From a :class:`Parts`, a scipy sparse matrix or a dense array."""
        if isinstance(M, Parts):
            return M
        import scipy.sparse as sp

        M = sp.csr_matrix(M, dtype=np.float64)
        M.sum_duplicates()
        return cls(M.data, M.indices.astype(np.int32), M.indptr.astype(np.int32), M.shape)

    def scipy(self) -> scipy.sparse.csr_matrix:
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    def dense(self) -> np.ndarray:
        X = np.zeros(self.shape)
        X[self.rows(), self.indices] = self.data
        return X


def pad_desc(values, k: int = 2) -> np.ndarray:
    """The ``k`` largest values, float64 descending, zero-padded to length ``k``."""
    s = np.sort(np.asarray(values, dtype=np.float64))[::-1][:k]
    return np.concatenate([s, np.zeros(k - s.size)]) if s.size < k else s


def arpack_top(A, k: int = 2) -> np.ndarray:
    """Top-``k`` σ of a sparse matrix by ARPACK (``svds``), with a seeded start vector; BLAS on
    one thread (:func:`masktopo.threads.one_blas_thread`)."""
    import scipy.sparse.linalg

    from ..threads import one_blas_thread

    v0 = np.random.default_rng(0x5EED).standard_normal(min(A.shape))
    with one_blas_thread(scipy_linalg=True):
        s = scipy.sparse.linalg.svds(A, k=k, v0=v0, return_singular_vectors=False,
                                     solver="arpack")  # fmt: skip
    return pad_desc(s, k)


def solve_top2(mats: Sequence) -> np.ndarray:
    """σ₁, σ₂ of every matrix in ``mats`` (Parts, scipy sparse, dense, or a
    :class:`~masktopo.analysis._kernels.Block` of many); ``(matrices, 2)`` float64.

    All matrices go to one call of the compiled kernel :func:`masktopo.analysis._kernels.
    top2_batch` (see there: dense Gram route for a smaller side of at most
    :data:`DENSE_MAX_SIDE`, otherwise Lanczos on each connected component). A matrix whose
    Lanczos run did not converge within :data:`MAX_STEPS` steps (not seen on real masks) is
    solved by ARPACK instead.
    """
    from ._kernels import Block, job_count, pack

    parts = [M if isinstance(M, Block) else Parts.of(M) for M in mats]
    if not parts:
        return np.zeros((0, 2))
    dense = [i for i, P in enumerate(parts)
             if (dense_block(P) if isinstance(P, Block) else dense_route(P))]  # fmt: skip
    if not dense:
        return solve_packed(pack(parts))
    counts = np.array([job_count(P) for P in parts])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.zeros((int(counts.sum()), 2))
    on_dense = set(dense)
    rest = [i for i in range(len(parts)) if i not in on_dense]
    if rest:
        sv = solve_packed(pack([parts[i] for i in rest]))
        rows = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in rest])
        out[rows] = sv
    for i in dense:
        P = parts[i]
        if isinstance(P, Block):
            from ._dense import top2_block

            out[starts[i] : starts[i] + counts[i]] = top2_block(*P)
        else:
            out[starts[i]] = solve_dense(P)
    return out


#: With ``MASKTOPO_DENSE_ROUTE=auto`` (the default), the dense route (:mod:`masktopo.analysis._dense`) takes
#: matrices whose smaller side is at least this and whose density is at least
#: :data:`DENSE_ROUTE_MIN_DENSITY` (docs/performance.md, "LLM layers").
DENSE_ROUTE_MIN_SIDE = 1024
DENSE_ROUTE_MIN_DENSITY = 0.3
#: ... and at most this many entries (float64: 8 bytes each while it is solved).
DENSE_ROUTE_MAX_ENTRIES = 1 << 26


def _dense_mode() -> str:
    """``$MASKTOPO_DENSE_ROUTE`` as :func:`dense_route` and :func:`dense_block` read it."""
    return os.environ.get("MASKTOPO_DENSE_ROUTE", "auto").strip().lower() or "auto"


def dense_route(P: Parts) -> bool:
    """Whether ``P`` is solved by the dense route, by ``$MASKTOPO_DENSE_ROUTE``: ``auto`` (the
    default: large and at 30 % density or more), ``off`` (never) or ``on`` (every matrix of at
    least 64 a side). Measured in docs/performance.md ("LLM layers")."""
    return dense_shape(P.shape, P.nnz)


def dense_shape(shape: tuple[int, int], nnz: int) -> bool:
    """:func:`dense_route` of a matrix of this shape and this many stored entries."""
    mode = _dense_mode()
    m, n = shape
    if mode == "off" or min(m, n) < 64:
        return False
    if mode == "on":
        return m * n <= DENSE_ROUTE_MAX_ENTRIES
    return (min(m, n) >= DENSE_ROUTE_MIN_SIDE and m * n <= DENSE_ROUTE_MAX_ENTRIES
            and nnz >= DENSE_ROUTE_MIN_DENSITY * m * n)  # fmt: skip


#: A :class:`~masktopo.analysis._kernels.Block` (the IMDB groups of a layer) is solved by dense
#: BLAS (:func:`masktopo.analysis._dense.top2_block`) when its matrices hold at least this many
#: entries in all, at :data:`DENSE_ROUTE_MIN_DENSITY` or more (docs/performance.md, "LLM
#: layers": the groups of a 4096 × 11008 layer at 50 %, one thread, 2.05 → 0.47 s).
DENSE_BLOCK_MIN_ENTRIES = 1 << 20
#: ... and when none of them has a smaller side above this (a full ``eigh`` of its Gram matrix
#: stays cheap; a dense layer's one group, the whole layer, keeps the engine's Lanczos).
DENSE_BLOCK_MAX_SIDE = 512


def dense_block(B) -> bool:
    """Whether the matrices of Block ``B`` are solved by dense BLAS (see
    :data:`DENSE_BLOCK_MIN_ENTRIES`), by ``$MASKTOPO_DENSE_ROUTE`` as :func:`dense_route`:
    ``auto`` (the default), ``off`` (never: the compiled engine) or ``on`` (every Block whose
    matrices have smaller sides up to :data:`DENSE_BLOCK_MAX_SIDE`)."""
    mode = _dense_mode()
    if mode == "off" or not B.count:
        return False
    if int(np.minimum(B.shapes[:, 0], B.shapes[:, 1]).max()) > DENSE_BLOCK_MAX_SIDE:
        return False
    if mode == "on":
        return True
    entries = int((B.shapes[:, 0] * B.shapes[:, 1]).sum())
    return entries >= DENSE_BLOCK_MIN_ENTRIES and B.nnz >= DENSE_ROUTE_MIN_DENSITY * entries


def solve_dense(P: Parts) -> np.ndarray:
    """σ₁, σ₂ of ``P`` by the dense route (:func:`masktopo.analysis._dense.top2_dense`); by the
    compiled engine when that does not converge within its steps. A binary pattern or its
    normalized matrix has its Gram matrix counted in bits
    (:func:`masktopo.analysis._bitgram.pattern_gram`) and is never densified; other values
    are (the Gram matrix, when one is formed, is then float64, or float32 where exact)."""
    from ._bitgram import pattern_gram
    from ._dense import top2_dense
    from ._kernels import pack

    G = pattern_gram(P)
    if G is not None:
        sv, ok, _ = top2_dense(P.scipy(), TOL, G=G)
    else:
        sv, ok, _ = top2_dense(P.dense(), TOL)
    del G
    return sv if ok else solve_packed(pack([P]))[0]


def solve_packed(packed: tuple) -> np.ndarray:
    """:func:`solve_top2` of matrices already concatenated by :func:`~masktopo.analysis._kernels.
    pack` (six arrays: cheap to send to a worker process, unlike thousands of small ones)."""
    from ._kernels import top2_batch, unpack

    out, ok, _ = top2_batch(*packed, TOL, MAX_STEPS, DENSE_MAX_SIDE)
    for j in np.flatnonzero(~ok):  # pragma: no cover - not seen on real masks
        out[j] = arpack_top(Parts(*unpack(packed, j)).scipy())
    return out


#: Nanoseconds per ``s²·l`` (``s``, ``l``: a matrix's smaller and larger side) of a spectrum on
#: the dense route, for its Gram matrix: counted in bits (a binary pattern or its normalized
#: matrix) and formed by float64 BLAS (other values); and per ``s²`` for its block steps on the
#: Gram matrix. Fitted on the six spectra of 4096 × 4096 (2:4) and 4096 × 11008 (per row) at
#: 50 % (one thread of the 2-core AMD EPYC VM: 1.5–2.9 s and 2.3–6.2 s, docs/performance.md
#: "LLM layers"); only the ratios between jobs matter (they split jobs between threads).
DENSE_NS_BITS = 0.0065
DENSE_NS_BLAS = 0.028
DENSE_NS_STEPS = 70
#: Nanoseconds per stored entry of a Block: on the dense BLAS route, and on the compiled engine
#: (the fit below for a binary pattern, per entry).
DENSE_BLOCK_NS = 20
ENGINE_BLOCK_NS = 80


def cost(J) -> int:
    """Predicted nanoseconds to solve a spectral job, to split jobs between threads: a
    :class:`~masktopo.analysis._kernels.Block` by its stored entries (:data:`DENSE_BLOCK_NS` or
    :data:`ENGINE_BLOCK_NS`), a :class:`Parts` on the dense route by its shape
    (:data:`DENSE_NS_BITS` or :data:`DENSE_NS_BLAS`, and :data:`DENSE_NS_STEPS`), any other by
    a least-squares fit to the kernel's time per matrix on 6,364 ResNet-18 ERK-99 % PAGS
    matrices."""
    from ._kernels import Block

    if isinstance(J, Block):
        return (DENSE_BLOCK_NS if dense_block(J) else ENGINE_BLOCK_NS) * J.nnz
    P = J
    side, other = min(P.shape), max(P.shape)
    if dense_route(P):
        from ._bitgram import bit_route

        rate = DENSE_NS_BITS if bit_route(P) else DENSE_NS_BLAS
        return int(side * side * (rate * other + DENSE_NS_STEPS))
    if side <= DENSE_MAX_SIDE:
        return 6000 + 320 * side + 88 * side * side + 14 * other + 3 * P.nnz
    if P.nnz and P.data[0] == 1.0 and np.all(P.data == 1.0):  # binary: converges more slowly
        return 30700 + 81 * P.nnz + 448 * side + 76 * other
    return 33600 + 76 * P.nnz + 312 * side + 9 * other
