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

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

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
        M = sp.csr_matrix(M, dtype=np.float64)
        M.sum_duplicates()
        return cls(M.data, M.indices.astype(np.int32), M.indptr.astype(np.int32), M.shape)

    def scipy(self) -> sp.csr_matrix:
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
    """Top-``k`` σ of a sparse matrix by ARPACK (``svds``), with a seeded start vector."""
    v0 = np.random.default_rng(0x5EED).standard_normal(min(A.shape))
    s = sp.linalg.svds(A, k=k, v0=v0, return_singular_vectors=False, solver="arpack")
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
    from ._kernels import Block, pack

    parts = [M if isinstance(M, Block) else Parts.of(M) for M in mats]
    if not parts:
        return np.zeros((0, 2))
    return solve_packed(pack(parts))


def solve_packed(packed: tuple) -> np.ndarray:
    """:func:`solve_top2` of matrices already concatenated by :func:`~masktopo.analysis._kernels.
    pack` (six arrays: cheap to send to a worker process, unlike thousands of small ones)."""
    from ._kernels import top2_batch, unpack

    out, ok, _ = top2_batch(*packed, TOL, MAX_STEPS, DENSE_MAX_SIDE)
    for j in np.flatnonzero(~ok):  # pragma: no cover - not seen on real masks
        out[j] = arpack_top(Parts(*unpack(packed, j)).scipy())
    return out


def cost(P: Parts) -> int:
    """Predicted nanoseconds to solve ``P`` (to split work between processes): a least-squares
    fit to the kernel's time per matrix on 6,364 ResNet-18 ERK-99 % PAGS matrices."""
    side, other = min(P.shape), max(P.shape)
    if side <= DENSE_MAX_SIDE:
        return 6000 + 320 * side + 88 * side * side + 14 * other + 3 * P.nnz
    if P.nnz and P.data[0] == 1.0 and np.all(P.data == 1.0):  # binary: converges more slowly
        return 30700 + 81 * P.nnz + 448 * side + 76 * other
    return 33600 + 76 * P.nnz + 312 * side + 9 * other
