r"""CHITA's sparse least-squares problem and its solvers, in torch (on the device of ``G``).

Benbaki, Chen, Meng, Hazimeh, Ponomareva, Zhao, Mazumder, *Fast as CHITA: Neural Network Pruning
with Combinatorial Optimization*, ICML 2023 (methods-spec §5.1-5.2). With the gradient matrix
:math:`G \in \mathbb R^{n \times p}` (:mod:`masktopo.prune.gradients`), the pretrained weights
:math:`\bar w` and :math:`y = G \bar w`, every solver returns a :math:`w` with exactly
:math:`\|w\|_0 \le k` (its support has exactly ``k`` entries) for

.. math::

    \min_w\; f(w) = \tfrac12 \|y - G w\|^2 + \lambda_2 \|w - \bar w\|^2 + \alpha^\top w
    \quad \text{s.t.}\quad \|w\|_0 \le k,

the local quadratic model of the loss under the empirical Fisher :math:`G^\top G / n`, times
:math:`n`; :math:`\lambda_2 = \texttt{l2}\, n / 2` and :math:`\alpha` = 0, or the mean gradient
:math:`\frac1m \sum_i g_i` (``first_order``; :math:`\sum_i g_i` with ``alpha_one``).

:math:`\nabla f(w) = -G^\top (y - G w) + \alpha + 2 \lambda_2 (w - \bar w)`. The solvers (one
interface: ``solve(problem, k, options, generator) -> Solution``, registered in
:data:`SOLVERS`):

``mp``
    Magnitude pruning: the top-:math:`k` :math:`|\bar w|`, weights unchanged (the trainer's global
    magnitude pruning, :func:`masktopo.pai.select.select_global`, ties drawn at random).
``bso``
    Backsolve (Alg. 5): the support of ``mp`` (after one exact line-search step along
    :math:`-\alpha` when :math:`\alpha \ne 0`), then the ridge re-fit on it,
    :math:`w_S = (G_S^\top G_S + 2\lambda_2 I)^{-1} (G_S^\top y + 2 \lambda_2 \bar w_S - \alpha_S)`,
    through the Woodbury identity (an :math:`n \times n` solve) when :math:`n < |S|`.
``bso-block``
    Block backsolve (Alg. 6): one global magnitude top-:math:`k`, then the re-fit per contiguous
    block of ``block_size`` weights of a layer with :math:`y_b = G_b \bar w_b` (the Fisher taken
    block-diagonal); blocks solved together, batched.
``iht``
    IHT with the exact line search (Alg. 2/3), from :math:`H_k(\bar w - \nabla f(\bar w)/L)`,
    :math:`L = 1.05 (\sigma_{\max}(G)^2 + 2\lambda_2)`. Each iteration takes the closed-form step
    :math:`\eta^* = g_S^\top g / (\|G g_S\|^2 + 2 \lambda_2 \|g_S\|^2)` along the gradient restricted
    to the support when it keeps the support (below :math:`\eta_{\rm change}`), else tries
    :math:`H_k(w - \eta g)` from :math:`\eta_{\rm change}/(1 + 10^{-4})`, doubling up to
    ``sea1_max_itr`` times while :math:`f` decreases, and keeps the best of those and of the
    support-preserving step; so :math:`f` never increases. Stops when the relative decrease is
    below ``ftol`` or after ``max_iter`` iterations.
``chita``
    The active-set method (CHITA, Alg. 4; the reference's default): drop zero columns; start from
    the support of :math:`H_{\lceil 1.5 k \rceil}(\bar w - \nabla f(\bar w)/L)`; run ``iht`` on the
    active columns; look outside for improving coordinates with full steps
    :math:`H_k(w - \nabla f(w)/L')`, :math:`L' = 2 L_A` doubled up to ``sea2_max_itr`` times
    until :math:`f` decreases; add the new coordinates and repeat (at most ``outer_iter`` rounds;
    stop when no step improves or no new coordinate appears).

Coordinate descent on the support (the reference's ``cd_itr``, off in its shipped one-shot
path) is replaced by its limit: with ``refit`` (default on) ``iht`` and ``chita`` end with the
ridge re-fit of ``bso`` on their final support, the minimum of :math:`f` on that support. :math:`\eta_{\rm change}` is the conservative bound
:math:`\min_{i \in S} |w_i| / (|g_i| + \max_{j \notin S} |g_j|)` (a step below it keeps the support).

Costs (the same iterates as the reference's algorithm, up to rounding): the start point needs no
power iteration over all of ``G`` when :math:`\alpha = 0` (:math:`\nabla f(\bar w) = \alpha`);
the active set's and the support's columns are gathered once per round (numpy's ``take``, row
major); on one CPU thread each support-keeping IHT iteration and each power iteration reads the
active columns once (:func:`_gram_step`: :math:`G g_S` and :math:`G^\top G g_S` from blocks of
rows in cache, the gradient updated from them); the re-fits form their Gram matrix from one
triangle (:func:`_gram`) and solve it by Cholesky; objectives use residuals from the gathered
columns.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import is_integer, is_number
from ..errors import MaskValidationError, UnknownNameError
from ..masks import check_finite_values
from ..pai.select import top_k_mask

__all__ = [
    "SOLVERS",
    "Problem",
    "Solution",
    "SolverOptions",
    "blocks",
    "get_solver",
    "hard_threshold",
    "lipschitz",
    "ridge_refit",
    "solve",
]


@dataclass(frozen=True)
class SolverOptions:
    """Knobs of the solvers (the reference's names in brackets; its defaults).

    Attributes
    ----------
    max_iter : int
        IHT iterations per call [``num_iterations``].
    ftol : float
        Stop IHT when the relative decrease of f is below this [``ftol``, 1e-7 in CHITA.py].
    kimp : float
        The active set starts with ``ceil(kimp * k)`` coordinates [``kimp``].
    sea1_max_itr, sea2_max_itr : int
        Step doublings of IHT's search, step halvings of the active set's search.
    outer_iter : int
        Active-set rounds.
    block_size : int
        ``bso-block``: weights per block (a layer smaller than this is one block).
    layer_sizes : tuple of int
        ``bso-block``: the sizes of the layers, in the order of ``G``'s columns.
    power_iter : int
        Power iterations for :math:`\\sigma_{\\max}(G)` (a randomized SVD in the reference).
    refit : bool
        ``iht``, ``chita``: end with the ridge re-fit on the final support (the limit of the
        reference's coordinate descent on the support, in closed form); inside IHT, the same
        re-fit after ``patience`` consecutive support-keeping steps.
    patience : int
        See ``refit``.
    batched_blocks : bool
        ``bso-block``: solve the blocks batched in torch (groups of similar kept counts, padded)
        also on the CPU; that route is always taken on a GPU, and on the CPU the blocks are
        solved one after the other in numpy (faster there). For tests.
    keep_zero_columns : bool
        ``chita``: also keep weights whose column of ``G`` is zero (weights the sampled loss
        does not see), where the start weight is nonzero. The reference drops every zero
        column (methods-spec §5.2, Alg. 4 step 1: those weights are pruned whatever their
        magnitude), which suits inputs that are always zero but, with few samples, drops
        weights that merely happened to get no gradient, and can end with an objective above
        magnitude pruning's. Default False (the reference); :func:`solve` warns when such a
        column holds one of the ``k`` largest start weights.
    """

    max_iter: int = 500
    ftol: float = 1e-7
    kimp: float = 1.5
    sea1_max_itr: int = 5
    sea2_max_itr: int = 10
    outer_iter: int = 20
    block_size: int = 500
    layer_sizes: tuple[int, ...] = ()
    power_iter: int = 30
    refit: bool = True
    patience: int = 3
    batched_blocks: bool = False
    keep_zero_columns: bool = False


@dataclass
class Problem:
    r"""One instance of CHITA's problem (module docstring): ``G``, :math:`\bar w`,
    :math:`\lambda_2` (already scaled) and :math:`\alpha` (None: 0), all on one device/dtype.

    Use :meth:`build` to scale ``l2`` and form :math:`\alpha` as the reference does.
    :attr:`y` (:math:`G \bar w`) is formed on first use (``bso-block`` never needs it).
    """

    G: torch.Tensor
    w_bar: torch.Tensor
    lam: float
    alpha: torch.Tensor | None = None
    _y: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        for what, t in (("G", self.G), ("w_bar", self.w_bar), ("alpha", self.alpha)):
            if t is None and what == "alpha":
                continue
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                kind = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
                raise MaskValidationError(f"Problem: {what} must be a floating-point torch "
                                          f"tensor, not {kind}")  # fmt: skip
        if self.G.dim() != 2 or self.w_bar.shape != (self.G.shape[1],):
            raise MaskValidationError(
                f"G must be [n, p] and w_bar [p]; got {tuple(self.G.shape)} and "
                f"{tuple(self.w_bar.shape)}"
            )
        if self.alpha is not None and self.alpha.shape != self.w_bar.shape:
            raise MaskValidationError(f"Problem: alpha must be [p] = {tuple(self.w_bar.shape)}, got "
                                      f"{tuple(self.alpha.shape)}")  # fmt: skip
        if not (is_number(self.lam) or isinstance(self.lam, np.floating)):
            raise MaskValidationError(f"Problem: lam must be a number, not {self.lam!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise MaskValidationError(f"Problem: lam (the ridge weight) must be finite and >= 0, "
                                      f"got {self.lam!r}")  # fmt: skip
        for what, t in (("G", self.G), ("w_bar", self.w_bar), ("alpha", self.alpha)):
            if t is not None:  # one reduction; the exact count only when it is not finite
                check_finite_values(f"Problem: {what}", t)
        self.w_bar = self.w_bar.to(self.G)
        if self.alpha is not None:
            self.alpha = self.alpha.to(self.G)

    @property
    def y(self) -> torch.Tensor:
        r""":math:`y = G \bar w` (formed once, on first use)."""
        if self._y is None:
            self._y = self.G @ self.w_bar
        return self._y

    @classmethod
    def build(
        cls,
        G: torch.Tensor,
        w_bar: torch.Tensor,
        *,
        l2: float,
        first_order: bool = False,
        alpha_one: bool = False,
        minibatch: int = 1,
    ) -> Problem:
        r""":math:`\lambda_2 = \texttt{l2}\, n/2`; :math:`\alpha = \frac1m \sum_i g_i` with
        ``first_order`` (:math:`\sum_i g_i` with ``alpha_one``), else 0 (methods-spec §5.1)."""
        n = G.shape[0]
        alpha = None
        if first_order:
            alpha = G.sum(0)
            if not alpha_one:
                alpha = alpha / minibatch
        return cls(G, w_bar, float(l2) * n / 2.0, alpha)

    @property
    def p(self) -> int:
        return self.G.shape[1]

    def objective(self, w: torch.Tensor, r: torch.Tensor | None = None) -> float:
        """:math:`f(w)` (``r`` = :math:`y - G w` when known)."""
        if r is None:
            r = self.y - self.G @ w
        f = 0.5 * (r @ r) + self.lam * (w - self.w_bar).square().sum()
        if self.alpha is not None:
            f = f + self.alpha @ w
        return float(f)

    def gradient(self, w: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\nabla f(w)`."""
        if r is None:
            r = self.y - self.G @ w
        g = -(self.G.T @ r) + 2.0 * self.lam * (w - self.w_bar)
        if self.alpha is not None:
            g = g + self.alpha
        return g

    def columns(self, idx: torch.Tensor) -> Problem:
        """The problem restricted to the columns ``idx`` (the others fixed at 0); ``y`` stays the
        full :math:`G \\bar w`, so objectives differ from the full one by a constant."""
        sub = Problem.__new__(Problem)
        sub.G = _take_columns(self.G, idx)
        sub.w_bar = self.w_bar[idx]
        sub.lam = self.lam
        sub.alpha = None if self.alpha is None else self.alpha[idx]
        sub._y = self.y
        return sub


@dataclass
class Solution:
    """What a solver returns.

    Attributes
    ----------
    w : torch.Tensor
        The new weights, ``[p]``, zero off ``support``.
    support : torch.Tensor
        ``[p]`` bool with exactly ``k`` True entries.
    objective : float
        :math:`f(w)`.
    iterations : int
        Iterations (IHT) or rounds (active set); 0 for the closed-form solvers.
    seconds : float
        Wall time of the solve (device synchronised).
    """

    w: torch.Tensor
    support: torch.Tensor
    objective: float
    iterations: int = 0
    seconds: float = 0.0


def hard_threshold(v: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`H_k(v)`: keep the ``k`` largest :math:`|v_i|` (``torch.topk``); ``(w, support)``."""
    support = torch.zeros(v.shape, dtype=torch.bool, device=v.device)
    if k > 0:
        support[torch.topk(v.abs(), k, sorted=False).indices] = True
    return v * support, support


def _top_k_within(v: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` largest :math:`|v_i|` with ``allowed[i]`` (``k <= allowed.sum()``)."""
    mask = torch.zeros_like(allowed)
    if k > 0:
        mask[torch.topk(v.abs().masked_fill(~allowed, -1.0), k, sorted=False).indices] = True
    return mask


def lipschitz(G: torch.Tensor, lam: float, iters: int = 30, seed: int = 0,
              tol: float = 1e-4) -> float:  # fmt: skip
    r""":math:`L = 1.05\,(\sigma_{\max}(G)^2 + 2 \lambda_2)`, :math:`\sigma_{\max}^2` by power
    iteration on :math:`G^\top G` (at most ``iters`` steps, stopped when the Rayleigh quotient
    changes by less than ``tol`` relatively; the reference uses a randomized SVD; one pass over
    ``G`` per step, :func:`_gram_step`). The factor 1.05 covers the power method's
    underestimate."""
    if G.numel() == 0:
        return 1.05 * 2.0 * lam or 1.0
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(G.shape[1], generator=g, dtype=torch.float64).to(G)
    v = v / v.norm()
    s2 = 0.0
    for _ in range(iters):
        u = _gram_step(G, v)[1]
        nrm = float(u.norm())
        if nrm == 0.0:
            break
        new = float(v @ u)
        v = u / nrm
        done = abs(new - s2) <= tol * abs(new)
        s2 = new
        if done:
            break
    return 1.05 * (s2 + 2.0 * lam) or 1.0


def ridge_refit(
    G: torch.Tensor,
    y: torch.Tensor,
    w_bar: torch.Tensor,
    lam: float,
    alpha: torch.Tensor | None,
    idx: torch.Tensor,
) -> torch.Tensor:
    r"""The backsolve on the support ``idx`` (methods-spec §5.2, Alg. 5).

    :math:`w_S = (G_S^\top G_S + c I)^{-1} b` with :math:`c = 2\lambda_2`,
    :math:`b = G_S^\top y + c \bar w_S - \alpha_S`; when :math:`n < |S|` and :math:`c > 0` by
    Woodbury, :math:`w_S = (b - G_S^\top (c I_n + G_S G_S^\top)^{-1} G_S b) / c` (cost
    :math:`O(n^2 |S| + n^3)`); with :math:`c = 0` the least-squares solution of minimum norm.
    The Gram matrix is one symmetric rank-k update (``syrk`` on the CPU), the solve a Cholesky
    factorization. Returns :math:`w_S` (``[|S|]``).
    """
    return _refit(G, y, w_bar, lam, alpha, idx)[0]


def _refit(
    G: torch.Tensor,
    y: torch.Tensor,
    w_bar: torch.Tensor,
    lam: float,
    alpha: torch.Tensor | None,
    idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ridge_refit` and its residual :math:`y - G_S w_S` (from the gathered columns,
    not all of ``G``)."""
    GS = _take_columns(G, idx)
    c = 2.0 * lam
    b = GS.T @ y + c * w_bar[idx]
    if alpha is not None:
        b = b - alpha[idx]
    n, s = GS.shape
    if c <= 0.0:
        if alpha is None:
            wS = torch.linalg.lstsq(GS, y.unsqueeze(1), driver="gelsd" if GS.device.type ==
                                    "cpu" else None).solution.squeeze(1)  # fmt: skip
        else:
            wS = torch.linalg.pinv(GS.T @ GS) @ b
        return wS, y - GS @ wS
    if n < s:
        K = _gram(GS)
        K.diagonal().add_(c)
        wS = (b - GS.T @ _spd_solve(K, GS @ b)) / c
    else:
        A = _gram(GS.T)
        A.diagonal().add_(c)
        wS = _spd_solve(A, b)
    return wS, y - GS @ wS


def _refit_point(pb: Problem, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge re-fit on ``support`` as a full vector, with its residual :math:`y - G w`."""
    idx = support.nonzero().squeeze(1)
    wS, r = _refit(pb.G, pb.y, pb.w_bar, pb.lam, pb.alpha, idx)
    w = torch.zeros_like(pb.w_bar)
    w[idx] = wS
    return w, r


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def _numpy_view(t: torch.Tensor):
    """``t`` as a numpy array sharing its memory (CPU float32/float64 only), else None."""
    if t.device.type != "cpu" or t.requires_grad or t.dtype not in (torch.float32, torch.float64):
        return None
    return t.numpy()


def _take_columns(G: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``G[:, idx]`` as a new row-major tensor.

    On the CPU numpy's fancy indexing gathers the columns of a row-major matrix about twice as
    fast as torch's indexing kernel (one thread), so it does the copy there.
    """
    a = _numpy_view(G)
    if a is None or G.dim() != 2:
        return G[:, idx]
    return torch.from_numpy(np.take(a, idx.cpu().numpy(), axis=1))  # row-major


@functools.cache
def _scipy_blas():
    """scipy's BLAS wrappers and a thread-pool controller that sees their library."""
    import scipy.linalg.blas as blas
    from threadpoolctl import ThreadpoolController

    return blas, ThreadpoolController()


def _gram(A: torch.Tensor) -> torch.Tensor:
    r""":math:`A A^\top`, symmetric, computing one triangle (half the flops of ``A @ A.T``).

    On one CPU thread (float32/float64) one BLAS ``syrk`` (scipy's); on several threads the
    upper blocks of a 4 x 4 partition by torch products, mirrored (10 of 16 blocks: scipy's
    BLAS would bring a second thread pool, which contends with torch's for the cores), or below
    512 rows one torch product with its upper triangle mirrored; on the CPU the result is
    exactly symmetric. Elsewhere (another device, autograd) ``A @ A.T``.
    """
    a = _numpy_view(A)
    if a is None or A.dim() != 2:
        return A @ A.T
    if torch.get_num_threads() > 1:
        n = A.shape[0]
        if n < 512:  # one product, its upper triangle mirrored: BLAS's A Aᵀ need not be
            K = A @ A.T  # exactly symmetric (it is not on some CPUs, e.g. AMD EPYC with AVX2)
            return K.triu() + K.triu(1).T
        cut = [round(i * n / 4) for i in range(5)]
        K = A.new_empty(n, n)
        for i in range(4):
            Ai = A[cut[i] : cut[i + 1]]
            for j in range(i, 4):
                blk = Ai @ A[cut[j] : cut[j + 1]].T
                if j == i:  # a diagonal block: its upper triangle mirrored (see below)
                    blk = blk.triu() + blk.triu(1).T
                K[cut[i] : cut[i + 1], cut[j] : cut[j + 1]] = blk
                if j > i:
                    K[cut[j] : cut[j + 1], cut[i] : cut[i + 1]] = blk.T
        return K
    blas, pools = _scipy_blas()
    syrk = blas.dsyrk if a.dtype == np.float64 else blas.ssyrk
    with pools.limit(limits=1, user_api="blas"):  # one thread, as torch
        if a.flags.c_contiguous:  # a.T is Fortran-ordered: syrk(a.T, trans=1) = a a^T, no copy
            upper = syrk(1.0, a.T, trans=1)
        else:
            upper = syrk(1.0, a, trans=0)  # copies a to Fortran order when it is not
    K = torch.from_numpy(upper)  # upper triangle and diagonal filled, the rest 0
    K = K + K.T
    K.diagonal().mul_(0.5)  # exact: the diagonal was doubled
    return K


def _spd_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A^{-1} b`` for a symmetric positive definite ``A`` (Cholesky; LU when it fails)."""
    Lc, info = torch.linalg.cholesky_ex(A)
    if int(info.max()) != 0:
        return torch.linalg.solve(A, b)
    return torch.cholesky_solve(b.unsqueeze(-1), Lc).squeeze(-1)


def _block_rows(G: torch.Tensor) -> int:
    """Rows per block of :func:`_gram_step`: about 1 MiB of ``G`` (L2-resident) on one thread;
    all rows (no blocks) when torch runs several threads: each block's product would then be a
    parallel region ending in a barrier, which costs more than the bytes saved, and far more
    when other processes keep the cores busy (a barrier waits for a descheduled thread)."""
    if torch.get_num_threads() > 1:
        return G.shape[0]
    return max(4, (1 << 20) // max(1, G.shape[1] * G.element_size()))


def _gram_step(
    G: torch.Tensor, v: torch.Tensor, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(G v,\; G^\top G v)`.

    On the CPU in one pass over blocks of rows of ``G``, each block read from memory once and
    used for both products while it is in cache (half the bytes of two separate products);
    elsewhere, and on several threads, two products. ``rows``: rows per block (default
    :func:`_block_rows`).
    """
    n = G.shape[0]
    if G.device.type != "cpu" or n == 0 or G.stride(1) != 1:
        t = G @ v
        return t, G.T @ t
    rows = rows or _block_rows(G)
    if rows >= n:
        t = G @ v
        return t, G.T @ t
    t = torch.empty(n, dtype=G.dtype)
    u = torch.zeros(G.shape[1], dtype=G.dtype)
    for s in range(0, n, rows):
        Gb = G[s : s + rows]
        tb = torch.mv(Gb, v, out=t[s : s + rows])
        u.addmv_(Gb.T, tb)
    return t, u


def _magnitude_support(pb: Problem, k: int, generator: torch.Generator) -> torch.Tensor:
    """Top-k of |w̄| (α = 0), or of one exact line-search step along -α (the reference's
    ``prune_ls``): f(w̄ - ηα) is minimised at η = ‖α‖² / (‖Gα‖² + 2λ₂‖α‖²)."""
    v = pb.w_bar
    if pb.alpha is not None:
        a = pb.alpha
        aa = float(a @ a)
        Ga = pb.G @ a
        denom = float(Ga @ Ga) + 2.0 * pb.lam * aa
        if denom > 0:
            v = pb.w_bar - (aa / denom) * a
    return top_k_mask(v.abs(), k, generator)


def _mp(pb: Problem, k: int, opts: SolverOptions, generator: torch.Generator) -> Solution:
    support = top_k_mask(pb.w_bar.abs(), k, generator)
    w = pb.w_bar * support
    return Solution(w, support, pb.objective(w))


def _bso(pb: Problem, k: int, opts: SolverOptions, generator: torch.Generator) -> Solution:
    support = _magnitude_support(pb, k, generator)
    w, r = _refit_point(pb, support)
    return Solution(w, support, pb.objective(w, r))


def blocks(layer_sizes: Sequence[int], block_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` column ranges of the blocks (methods-spec §5.2, Alg. 6): each layer's
    flattened weights cut into ``max(1, size // block_size)`` contiguous blocks, the last one
    taking the remainder (a layer smaller than ``block_size`` is one block)."""
    if block_size < 1:
        raise MaskValidationError(f"block_size must be >= 1, got {block_size}")
    out, start = [], 0
    for size in layer_sizes:
        nb = max(1, size // block_size)
        for b in range(nb):
            stop = start + size if b == nb - 1 else start + (b + 1) * block_size
            out.append((start + b * block_size, stop))
        start += size
    return out


#: Below this size :func:`_np_spd_solve` solves by LU (``numpy.linalg.solve``): scipy's
#: Cholesky wrappers cost ~25 µs a call more, which outweighs the halved flops of small blocks.
_NP_LU_MAX = 128


def _np_spd_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A^{-1} b`` for a symmetric positive definite ``A`` (LAPACK Cholesky; LU when it
    fails, and for matrices smaller than :data:`_NP_LU_MAX`)."""
    if A.shape[0] < _NP_LU_MAX:
        return np.linalg.solve(A, b)
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        return cho_solve(cho_factor(A, check_finite=False), b, check_finite=False)
    except LinAlgError:
        return np.linalg.solve(A, b)


def _bso_blocks_numpy(pb: Problem, Gn: np.ndarray, wn: np.ndarray, support: torch.Tensor,
                      sizes, block_size: int, c: float, w: torch.Tensor,
                      r: torch.Tensor) -> None:  # fmt: skip
    r"""Block backsolve on the CPU, block after block in numpy (as the reference, with the Gram
    matrix from one triangle, ``A.T @ A`` being a ``syrk`` in numpy, and
    :func:`_np_spd_solve`): each block's columns are read once for
    :math:`y_b = G_b \bar w_b`, and its kept ones gathered while in cache. Writes the weights
    into ``w`` and :math:`y - G w` into ``r``. Measured on ResNet-20's shapes: about the numpy
    port's time, where the batched route (the GPU's) took 1.7× it."""
    s_np = support.cpu().numpy()
    a_np = None if pb.alpha is None else pb.alpha.cpu().numpy()
    w_np, r_np = w.numpy(), r.numpy()
    n = Gn.shape[0]
    for start, stop in blocks(sizes, block_size):
        Gb = Gn[:, start:stop]
        yb = Gb @ wn[start:stop]
        r_np += yb
        kept = np.flatnonzero(s_np[start:stop])
        if not kept.size:
            continue
        X = Gb[:, kept]  # C-ordered copy: n × k_b
        idx = start + kept
        b = X.T @ yb + c * wn[idx]
        if a_np is not None:
            b -= a_np[idx]
        if n < kept.size:  # Woodbury: an n × n solve
            K = X @ X.T
            K[np.diag_indices(n)] += c
            ws = (b - X.T @ _np_spd_solve(K, X @ b)) / c
        else:
            A = X.T @ X
            A[np.diag_indices(kept.size)] += c
            ws = _np_spd_solve(A, b)
        w_np[idx] = ws
        r_np -= X @ ws


def _block_products(G: torch.Tensor, v: torch.Tensor, bounds) -> torch.Tensor:
    r"""``(len(bounds), n)``: :math:`G_b v_b` of every block (``bounds`` as :func:`blocks`
    gives them: contiguous, in order). The blocks of one width that follow each other (a layer's
    full blocks) are one batched product, so a network takes a few kernels, not one per block."""
    out = G.new_empty((len(bounds), G.shape[0]))
    i = 0
    while i < len(bounds):
        start, stop = bounds[i]
        width = stop - start
        j = i + 1
        while j < len(bounds) and bounds[j] == (stop + (j - i - 1) * width, stop + (j - i) * width):
            j += 1
        end = start + (j - i) * width
        Gr = G[:, start:end].reshape(G.shape[0], j - i, width)
        out[i:j] = torch.einsum("nkb,kb->kn", Gr, v[start:end].reshape(j - i, width))
        i = j
    return out


def _bso_blocks_batched(pb: Problem, support: torch.Tensor, bounds, c: float, w: torch.Tensor,
                        r: torch.Tensor) -> None:  # fmt: skip
    r"""Block backsolve with batched tensor code (the GPU's route; any device): every block's
    :math:`y_b = G_b \bar w_b` in a few batched products (:func:`_block_products`), the kept
    columns found once (one read of the block counts), the blocks grouped by kept count and each
    group's ridge systems gathered, padded and solved in one batched call. Writes the weights into
    ``w`` and :math:`y - G w` into ``r``. The kernels launched grow with the groups and layers,
    not with the blocks (a Python loop over ResNet-20's 542 blocks had cost a launch and a
    device read per block)."""
    G, dev = pb.G, pb.G.device
    n = G.shape[0]
    Y = _block_products(G, pb.w_bar, bounds)  # (blocks, n)
    r += Y.sum(0)
    kept = support.nonzero().squeeze(1)  # ascending, so each block's kept columns are a run
    if not kept.numel():
        return
    starts = torch.tensor([a for a, _ in bounds], dtype=kept.dtype, device=dev)
    counts = torch.bincount(torch.searchsorted(starts, kept, right=True) - 1,
                            minlength=len(bounds)).cpu().numpy()  # fmt: skip
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each block's first index into kept
    order = [b for b in np.argsort(counts, kind="stable") if counts[b]]
    budget = 1 << 25  # entries of one batched gather [blocks, n, K]
    i = 0
    while i < len(order):  # groups of similar counts: padding at most doubles the work
        cap = counts[order[i]] + max(8, counts[order[i]] // 4)
        j = i + 1
        while (j < len(order) and counts[order[j]] <= cap
               and (j + 1 - i) * n * counts[order[j]] <= budget):  # fmt: skip
            j += 1
        grp = np.array(order[i:j])
        kmax = int(counts[grp].max())
        lens = torch.from_numpy(counts[grp]).to(dev)
        col = torch.arange(kmax, device=dev)
        valid = col[None, :] < lens[:, None]  # (B, K)
        last = lens[:, None] - 1
        at = torch.from_numpy(first[grp]).to(dev)[:, None] + torch.minimum(col[None, :], last)
        idx = kept[at]  # (B, K): the padding repeats a block's last kept column ...
        GS = G[:, idx].permute(1, 0, 2) * valid[:, None, :]  # ... zeroed here: [B, n, K]
        yb = Y[torch.from_numpy(grp).to(dev)]
        b = (GS.transpose(1, 2) @ yb.unsqueeze(2)).squeeze(2) + c * pb.w_bar[idx] * valid
        if pb.alpha is not None:
            b = b - pb.alpha[idx] * valid
        if n < kmax:
            K = GS @ GS.transpose(1, 2)
            K.diagonal(dim1=1, dim2=2).add_(c)
            t = _spd_solve(K, (GS @ b.unsqueeze(2)).squeeze(2))
            ws = (b - (GS.transpose(1, 2) @ t.unsqueeze(2)).squeeze(2)) / c
        else:
            A = GS.transpose(1, 2) @ GS
            A.diagonal(dim1=1, dim2=2).add_(c)
            ws = _spd_solve(A, b)
        r -= (GS @ ws.unsqueeze(2)).sum((0, 2))
        w[idx[valid]] = ws[valid]
        i = j


def _bso_block(pb: Problem, k: int, opts: SolverOptions, generator: torch.Generator) -> Solution:
    sizes = opts.layer_sizes or (pb.p,)
    if sum(sizes) != pb.p:
        raise MaskValidationError(f"layer sizes add up to {sum(sizes)}, G has {pb.p} columns")
    support = _magnitude_support(pb, k, generator)
    w = torch.zeros_like(pb.w_bar)
    c = 2.0 * pb.lam
    if c <= 0.0:
        raise MaskValidationError("bso-block needs l2 > 0 (each block's re-fit is a ridge solve)")
    n = pb.G.shape[0]
    r = torch.zeros(n, dtype=pb.G.dtype, device=pb.G.device)  # y - G w, from the blocks
    Gn, wn = _numpy_view(pb.G), _numpy_view(pb.w_bar)
    if Gn is not None and wn is not None and not opts.batched_blocks:  # the CPU, in numpy
        _bso_blocks_numpy(pb, Gn, wn, support, sizes, opts.block_size, c, w, r)
        return Solution(w, support, pb.objective(w, r))
    _bso_blocks_batched(pb, support, blocks(sizes, opts.block_size), c, w, r)
    return Solution(w, support, pb.objective(w, r))


def _iht(
    pb: Problem,
    k: int,
    w: torch.Tensor,
    support: torch.Tensor,
    opts: SolverOptions,
) -> tuple[torch.Tensor, torch.Tensor, float, int, torch.Tensor]:
    r"""IHT with the exact line search from ``(w, support)``; ``(w, support, f, iterations, r)``
    with ``r`` = :math:`y - G w`.

    With ``opts.refit``, after ``opts.patience`` consecutive steps that keep the support the
    iterate jumps to the ridge re-fit on it (the point those steps converge to), and the next
    iteration searches support-changing steps only; no step lowering f ends the loop.

    One pass over ``G`` per support-keeping iteration: :func:`_gram_step` gives
    :math:`G g_S` (for the step) and :math:`G^\top G g_S` together, and the next gradient is
    updated from it, :math:`\nabla f(w - \eta g_S) = \nabla f(w) - \eta (G^\top G g_S +
    2 \lambda_2 g_S)`, instead of recomputed from the residual; after a support-changing step
    or a re-fit it is recomputed.
    """
    G, y, c = pb.G, pb.y, 2.0 * pb.lam
    r = y - G @ w
    f = pb.objective(w, r)
    g = None  # the gradient at w, when known
    on = support.nonzero().squeeze(1)
    it = 0
    kept = 0  # consecutive iterations that kept the support
    search_only = False
    for it in range(1, opts.max_iter + 1):  # noqa: B007 - the count is returned
        if g is None:
            g = pb.gradient(w, r)
        gS = g * support
        gg = float(gS @ gS)
        big = float(g.abs().masked_fill_(support, 0.0).max()) if g.numel() else 0.0
        if big > 0.0 and len(on):
            eta_change = float((w[on].abs() / (g[on].abs() + big)).min())
        else:
            eta_change = math.inf
        best_w, best_r, best_f, best_s = w, r, f, support
        eta, stepped, GtGgS = 0.0, False, None
        if not search_only and gg > 0.0:
            # the support-preserving step: f decreases by eta*gg/2 (exact line search)
            GgS, GtGgS = _gram_step(G, gS)
            denom = float(GgS @ GgS) + c * gg
            if denom > 0.0:
                eta, stepped = gg / denom, True
                best_w, best_r, best_f = w - eta * gS, r + eta * GgS, f - 0.5 * eta * gg
        if (search_only or eta >= eta_change) and math.isfinite(eta_change) and eta_change > 0:
            step = eta_change / (1.0 + 1e-4)
            prev = math.inf
            for _ in range(opts.sea1_max_itr):
                cand, cs = hard_threshold(w - step * g, k)
                cr = y - G @ cand
                cf = pb.objective(cand, cr)
                if cf < best_f:
                    best_w, best_r, best_f, best_s, stepped = cand, cr, cf, cs, False
                if cf >= prev:
                    break
                prev = cf
                step *= 2.0
        rel = (f - best_f) / max(abs(f), 1e-300)
        if best_f >= f:
            break
        same = bool(torch.equal(best_s, support))
        w, r, support = best_w, best_r, best_s
        if stepped:
            g = g - eta * (GtGgS + c * gS)
        else:
            g = None
            on = support.nonzero().squeeze(1)
        f = pb.objective(w, r)
        kept = kept + 1 if same else 0
        search_only = False
        if opts.refit and kept >= opts.patience:
            cand, cr = _refit_point(pb, support)
            cf = pb.objective(cand, cr)
            if cf <= f:
                w, r, f, g = cand, cr, cf, None
            kept, search_only = 0, True
            continue
        if rel < opts.ftol:
            break
    return w, support, f, it, r


def _start(pb: Problem, power_iter: int) -> torch.Tensor:
    r""":math:`\bar w - \nabla f(\bar w) / L`, the reference's first point. As :math:`y = G
    \bar w` (``Problem`` forms it so), :math:`\nabla f(\bar w) = \alpha`: no product with ``G``,
    and no :math:`L` (``power_iter`` power iterations over all of ``G``) when
    :math:`\alpha = 0`."""
    if pb.alpha is None:
        return pb.w_bar
    return pb.w_bar - pb.alpha / lipschitz(pb.G, pb.lam, power_iter)


def _iht_solver(pb: Problem, k: int, opts: SolverOptions, generator: torch.Generator) -> Solution:
    w0, s0 = hard_threshold(_start(pb, opts.power_iter), k)
    w, s, f, it, _ = _iht(pb, k, w0, s0, opts)
    w, f = _polish(pb, w, s, f, opts)
    return Solution(w, s, f, it)


def _polish(pb: Problem, w: torch.Tensor, support: torch.Tensor, f: float,
            opts: SolverOptions) -> tuple[torch.Tensor, float]:  # fmt: skip
    """The ridge re-fit on ``support`` when ``opts.refit`` and it lowers f (it is the minimum
    of f on that support, so it does unless rounding says otherwise)."""
    if not opts.refit:
        return w, f
    cand, cr = _refit_point(pb, support)
    cf = pb.objective(cand, cr)
    return (cand, cf) if cf < f else (w, f)


def _chita(pb: Problem, k: int, opts: SolverOptions, generator: torch.Generator) -> Solution:
    start = _start(pb, opts.power_iter)
    eligible = torch.linalg.vector_norm(pb.G, dim=0) > 0  # no squared copy of G
    if opts.keep_zero_columns:
        eligible |= start != 0
    else:
        _warn_zero_columns(start, eligible, k)
    if int(eligible.sum()) < k:
        eligible = torch.ones_like(eligible)
    start = start.masked_fill(~eligible, 0.0)
    k_act = min(int(eligible.sum()), math.ceil(opts.kimp * k))
    # the k_act largest |start| among the eligible columns, then the k largest among those:
    # never a column outside (ties at 0 could pick one when fewer than k starts are nonzero,
    # e.g. w̄ already pruned, and the support would lose it on the active columns)
    active = _top_k_within(start, eligible, k_act)
    support = _top_k_within(start, active, k)
    w = start * support
    f = pb.objective(w)
    rounds = 0
    for rounds in range(1, opts.outer_iter + 1):  # noqa: B007 - the count is returned
        idx = active.nonzero().squeeze(1)
        sub = pb.columns(idx)
        LA = lipschitz(sub.G, sub.lam, opts.power_iter)
        wa, sa, _, _, _ = _iht(sub, k, w[idx], support[idx], opts)
        w = torch.zeros_like(w)
        w[idx] = wa
        support = torch.zeros_like(support)
        support[idx] = sa
        r = pb.y - sub.G @ wa  # = y - G w, from the active columns only
        sub = None
        f = pb.objective(w, r)
        g = pb.gradient(w, r)
        Lp = 2.0 * LA
        accepted = None
        for _ in range(opts.sea2_max_itr):
            v = w - g / Lp
            cs = _top_k_within(v, eligible, k)
            cand = v * cs
            cf = pb.objective(cand)
            if cf < f:
                accepted = (cand, cs, cf)
                break
            Lp *= 2.0
        if accepted is None:
            break
        w, support, f = accepted
        new = support & ~active
        if not bool(new.any()):
            break
        active |= new
    w, f = _polish(pb, w, support, f, opts)
    return Solution(w, support, f, rounds)


def _warn_zero_columns(start: torch.Tensor, eligible: torch.Tensor, k: int) -> None:
    """Warn when CHITA's dropped zero columns hold some of the ``k`` largest start weights."""
    if k <= 0 or bool(eligible.all()):
        return
    top = torch.topk(start.abs(), min(k, start.numel()), sorted=False).indices
    lost = int((~eligible[top] & (start[top] != 0)).sum())
    if lost:
        warnings.warn(f"chita: {lost} of the k = {k} largest weights have an all-zero column in "
                      "G (no gradient on any sample: an input that is always zero, or too few "
                      "samples) and are pruned, as in the reference; keep_zero_columns keeps "
                      "them (masktopo prune --keep-zero-columns; masktopo train --set "
                      "chita_keep_zero_columns=true)", stacklevel=4)  # fmt: skip


#: Solver name -> ``solve(problem, k, options, generator) -> Solution``.
SOLVERS: dict[str, Callable[..., Solution]] = {
    "mp": _mp,
    "bso": _bso,
    "bso-block": _bso_block,
    "iht": _iht_solver,
    "chita": _chita,
}


def get_solver(name: str) -> Callable[..., Solution]:
    """The solver ``name`` (UnknownNameError listing the known ones)."""
    if name not in SOLVERS:
        raise UnknownNameError("solver", name, SOLVERS)
    return SOLVERS[name]


def solve(
    problem: Problem,
    k: int,
    method: str = "chita",
    options: SolverOptions | None = None,
    generator: torch.Generator | None = None,
) -> Solution:
    """Solve ``problem`` at exactly ``k`` kept weights with solver ``method`` (timed).

    Raises
    ------
    UnknownNameError
        An unknown solver.
    MaskValidationError
        ``k`` outside ``1 .. p``.
    """
    fn = get_solver(method)
    if not isinstance(problem, Problem):
        raise MaskValidationError(f"solve: problem must be a Problem, not {type(problem).__name__}")
    if not is_integer(k):
        raise MaskValidationError(f"solve: k (weights kept) must be an integer, not {k!r}")
    if not 1 <= int(k) <= problem.p:
        raise MaskValidationError(f"cannot keep {k} of {problem.p} weights")
    if options is not None and not isinstance(options, SolverOptions):
        raise MaskValidationError(
            f"solve: options must be a SolverOptions, not {type(options).__name__}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise MaskValidationError(
            f"solve: generator must be a torch.Generator, not {type(generator).__name__}"
        )
    if generator is None:
        generator = torch.Generator(device=problem.G.device).manual_seed(0)
    _sync(problem.G)
    t0 = time.perf_counter()
    sol = fn(problem, int(k), options or SolverOptions(), generator)
    _sync(problem.G)
    sol.seconds = time.perf_counter() - t0
    return sol
