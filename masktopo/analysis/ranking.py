r"""Rigorous bounds on the full-spectrum coordinate from a few Lanczos steps (PAGS ranking).

PAGS (:mod:`masktopo.pags`) scores every layer of every candidate with the coordinate
``c = (Δr, λ, IMDB_Δr, IMDB_λ)`` ([N23]_; :mod:`masktopo.analysis.metrics`) and keeps a layer
only when it beats the best so far. Most candidate layers lose clearly, so they do not need the
exact singular values: :func:`rank_layers` plans every layer as the exact analysis does
(the same stripped pattern, the same IMDB degree groups, the same matrices) and hands every
matrix to :func:`masktopo.analysis._kernels.top2_bounds_batch`, which returns, after at most
:data:`RANK_STEPS` Lanczos steps,

* lower bounds ``σ_i ≥ σ_i(BᵀW)`` for the two top Ritz vectors ``W`` (Cauchy interlacing:
  [GV13]_ Thm 8.1.7; any orthonormal ``W`` gives lower bounds),
* an upper bound ``σ₁² ≤ max_i (Gw)_i / w_i`` for the non-negative Gram operator ``G`` and a
  positive vector ``w`` (Collatz–Wielandt, [HJ13]_ §8.1), and ``σ₂ ≤ σ₁``,

exact values for matrices whose smaller side is at most 24 (the dense route, the same code as
the exact engine). Every coordinate entry is non-decreasing in each σ₁ and non-increasing in
each σ₂ it reads::

    Δr      = √(d̄_in − 1) + √(d̄_out − 1) − σ₂(B)                  (gated)
    λ       = σ₁(|W⊙M|) − σ₂(|W⊙M|)
    IMDB_Δr = mean_d c_d·(√(d − 1) + √(d̄_out(G_d) − 1) − σ₂(G_d))
    IMDB_λ  = mean_d c_d·(σ₁(|G_d|) − σ₂(|G_d|))

so evaluating the formulas at ``(σ₁ upper, σ₂ lower)`` gives an upper bound of each entry and
at ``(σ₁ lower, σ₂ upper)`` a lower bound. The degrees, gates, groups and Cheeger weights
``c_d`` are structural and exact. The bounds are widened by :data:`MARGIN` (relative to σ₁ of
the matrix) so that they hold for the exact engine's values too (exact to about 1e-12).

:meth:`LayerBounds.exact` then computes chosen layers exactly from the same plans: the exact
engine and the metric registry, so those rows equal :func:`~masktopo.analysis.metrics.
layer_metric_rows`'s bit for bit (results do not depend on which matrices share a call).

References
----------
.. [N23] D. N. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
.. [GV13] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., Johns Hopkins, 2013.
.. [HJ13] R. A. Horn, C. R. Johnson, *Matrix Analysis*, 2nd ed., Cambridge, 2013.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..checks import is_integer
from ..errors import MaskValidationError
from ..masks import mask_from_positions
from ..options import Options
from ..threads import one_blas_thread
from ._engine import DENSE_MAX_SIDE, Parts, solve_top2
from ._kernels import (
    Block,
    _gaussians,
    job_count,
    pack,
    rank_layer,
    top2_bounds_batch,
    unpack,
)
from ._registry import LayerCounts, select
from .metrics import (
    _expand,
    _extract,
    _finish,
    _imdb_rule,
    _kept,
    _plan_layer,
    _Raw,
    layer_side,
    resolve_metrics,
)
from .spectral import (
    dense_batches,
    in_threads,
    on_device,
    solve_many,
    use_workers,
)

#: The coordinate entries, in order (metric names of :mod:`masktopo.analysis.metrics`).
COORDINATES = (
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "imdb_weighted_gap",
)
#: Lanczos steps per matrix in the ranking pass (at most; fewer when the residual falls below
#: :data:`RANK_TOL` first).
RANK_STEPS = 16
#: Lanczos steps for the matrices other than the IMDB groups' binary ones.
OTHER_STEPS = 8
#: Lanczos steps for the weighted matrices' bounds in a screened exact pass
#: (:meth:`LayerBounds.exact_screened`; PAGS at n = 1000: 173 of 1206 layers finished with 4
#: steps, 159 with 8, and the pass ~5 % cheaper with 4).
SCREEN_STEPS = 4
#: Lanczos steps for the IMDB groups' binary matrices' bounds in the first stage of a screened
#: exact pass (:func:`_screened_rows`; PAGS at n = 1000: 808 of 1206 layers dropped there with
#: 8 steps; an offline count of the fs screen alone gave 537 with 4 steps, 825 with 8, 836
#: with 16).
SCREEN_GROUP_STEPS = 8
#: With a ``floor`` (:func:`rank_layers`), the first pass's Lanczos steps per IMDB group: a layer
#: whose ``IMDB_Δr`` upper bound is then already below its floor keeps that bound, the others'
#: groups go on to ``steps`` (resumed).
FIRST_STEPS = 8
#: How tightly :func:`rank_layers` bounds: every coordinate entry (``"all"``), or tightly only
#: ``IMDB_Δr`` from above (``"imdb"``; the other bounds stay rigorous but loose).
BOUNDS = ("all", "imdb")
#: Residual tolerance of the ranking pass, relative to σ₁² (early stop only).
RANK_TOL = 1e-6
#: Widening of every bound, relative to σ₁ of its matrix: covers rounding and the exact
#: engine's own error (about 1e-12), and is far below the ranking accuracy (about 1e-3).
MARGIN = 1e-8
#: Singular values below this share of σ₁ are reported as 0 by the analysis
#: (:data:`masktopo.analysis.metrics.SV_FLOOR`); a lower bound below 10× it is set to 0.
_FLOOR = 1e-12
_REMOTE_SHARE = 0.52


class KeptPositions(NamedTuple):
    """A layer's mask given by its shape and the ascending int64 flat (C-order) positions of its
    kept entries: what :func:`rank_layers` takes instead of a dense mask (PAGS candidates are
    drawn this way, :class:`masktopo.pags.sampling.Drawn`)."""

    shape: tuple[int, ...]
    positions: np.ndarray

    def dense(self) -> torch.Tensor:
        return mask_from_positions(self.shape, self.positions)


def _extract_any(
    name: str, mask, weight: torch.Tensor, opts: Options, weights: bool = True
) -> _Raw:
    """:func:`~masktopo.analysis.metrics._extract` for a dense mask or :class:`KeptPositions`
    (the same result, without building the mask where the conv reading allows). ``weights``
    False: a unit-valued layer's ``|W|`` is not gathered (``wdata`` None; lean ranking)."""
    if not isinstance(mask, KeptPositions):
        return _extract(name, mask, weight, opts)
    shape = tuple(mask.shape)
    wt = weight.detach()
    simple = len(shape) == 2 or opts.conv == "unrolled"
    if not simple or wt.device.type != "cpu" or wt.dtype not in (torch.float32, torch.float64):
        return _extract(name, mask.dense(), weight, opts)
    flat = mask.positions
    numel = math.prod(shape)
    w = np.abs(wt.numpy().reshape(-1)[flat]) if weights else None  # float32 stays float32
    pos = flat.astype(np.int32) if numel < 2**31 else flat
    return _Raw(name, shape[0], numel // shape[0], numel, pos, None, w)


def _size(mask) -> int:
    return int(mask.positions.size) if isinstance(mask, KeptPositions) else _kept(mask)


def _gate_ok(gate: str, d_left: float, d_right: float) -> bool:
    """The Ramanujan gate of :mod:`masktopo.analysis.metric_defs` (pags-spec §3.7)."""
    if gate == "n23":
        return d_left >= 3 and d_right > 1
    return d_left >= 3 and d_right >= 3


def _names() -> list[str]:
    return resolve_metrics([*COORDINATES, "n_edges"], weighted=True)


@dataclass
class _Part:
    """One thread's share: its layers' plans and the bounds of their matrices."""

    index: list[int]
    plans: list = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    steps: np.ndarray | None = None
    est: np.ndarray | None = None  # the lower bounds the estimates read (default: lo)


def _sv_table(lo: np.ndarray, hi: np.ndarray, est: np.ndarray | None = None) -> np.ndarray:
    """``(n, 6)``: per matrix the widened ``σ₁ lower, σ₁ upper, σ₂ lower, σ₂ upper`` and the
    estimates ``σ₁, σ₂`` (a σ₂ below the analysis's floor reads 0), the estimates from ``est``
    (lower bounds of another pass; default ``lo``)."""
    top = hi[:, 0]
    out = np.empty((lo.shape[0], 6))
    out[:, 0] = np.maximum(0.0, lo[:, 0] * (1 - MARGIN) - MARGIN * top)
    out[:, 1] = top * (1 + MARGIN) + 1e-300
    s2_lo = np.maximum(0.0, lo[:, 1] * (1 - MARGIN) - MARGIN * top)
    out[:, 2] = np.where(s2_lo < 10 * _FLOOR * top, 0.0, s2_lo)  # the analysis may report 0
    out[:, 3] = hi[:, 1] * (1 + MARGIN) + MARGIN * top
    est = lo if est is None else est
    out[:, 4] = est[:, 0]
    out[:, 5] = np.where(est[:, 1] < _FLOOR * est[:, 0], 0.0, est[:, 1])
    return out


def _imdb_terms(groups: tuple, opts: Options) -> tuple[np.ndarray, np.ndarray]:
    """Per IMDB group ``(d, n_s, n_r)`` (float64 arrays): the Cheeger weight ``c_d`` of the
    variant and the Ramanujan bound ``√(d − 1) + √(d·n_s/n_r − 1)`` (pags-spec §3.4)."""
    d, n_s, n_r = groups
    c = np.maximum(n_s, n_r) / (n_s + n_r - 1) if opts.imdb == "n23" else np.ones_like(d)
    return c, np.sqrt(d - 1) + np.sqrt(d * n_s / n_r - 1)


def _layout(plan) -> tuple:
    """Where a planned layer's matrices sit among its bounds: ``(binary, weighted, groups,
    group_binary, group_weighted)``, the indices of the whole pattern's binary and weighted
    matrices (None when not planned), the IMDB groups ``(d, n_s, n_r)`` as float64 arrays (None
    without groups) and the first index of the groups' binary and weighted matrices (a layer's
    groups occupy consecutive slots, one block per kind, in group order)."""
    if isinstance(plan, _FusedPlan):  # rank_layer's fixed order
        if not plan.n_mat:
            return None, None, None, 0, None
        ng = plan.groups[0].size
        return 0, 1, plan.groups if ng else None, 2, 2 + ng
    slots = plan.slots
    if not plan.imdb_groups:
        return slots.get("sv_binary"), slots.get("sv_weighted"), None, 0, None
    groups = tuple(np.array(v, dtype=np.float64) for v in zip(*plan.imdb_groups, strict=True))
    d0 = plan.imdb_groups[0][0]
    return (slots.get("sv_binary"), slots.get("sv_weighted"), groups,
            slots[("imdb_groups", d0)], slots.get(("imdb_weighted", d0)))  # fmt: skip


_FIRST = np.zeros(1, dtype=np.int64)


def _segment_means(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of each segment of ``x`` (consecutive, from ``starts``, ``counts ≥ 1`` long):
    the same bits for a segment whichever array holds it (one layer's groups or a part's)."""
    return np.add.reduceat(x, starts) / counts


def _lean_coords(res, part, opts: Options, table: np.ndarray) -> None:
    """:func:`_layer_coords` (``lean``) of every layer of ``part`` into ``res``, the layers
    ranked by :func:`_kernels.rank_layer` at once (the same values: no per-layer numpy calls
    for the ~20 layers of each of a few thousand candidates)."""
    fused = [k for k, plan in enumerate(part.plans) if isinstance(plan, _FusedPlan)]
    for k in sorted(set(range(len(part.plans))) - set(fused)):
        coords, res.valid[part.index[k]] = _layer_coords(part.plans[k], opts, table,
                                                         part.offsets[k], True)  # fmt: skip
        i = part.index[k]
        res.lower[i], res.upper[i], res.estimate[i] = coords
    if not fused:
        return
    plans = [part.plans[k] for k in fused]
    at = np.array([part.index[k] for k in fused], dtype=np.int64)
    edges = np.array([p.layer.n_edges for p in plans], dtype=np.float64)
    n_o = np.array([p.layer.n_out_active for p in plans], dtype=np.float64)
    n_i = np.array([p.layer.n_in_active for p in plans], dtype=np.float64)
    ok = (edges > 0) & (np.minimum(n_o, n_i) >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_out, d_in = edges / n_o, edges / n_i
    gate = (d_out >= 3) & ((d_in >= 3) if opts.gate != "n23" else (d_in > 1))
    res.valid[at] = ok & gate
    ng = np.array([p.groups[0].size for p in plans], dtype=np.int64)
    has = ok & (ng > 0)
    for arr in (res.lower, res.upper, res.estimate):
        arr[at] = np.nan
    if not has.any():
        return
    sel = np.flatnonzero(has)
    counts = ng[sel]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offsets = np.array([part.offsets[fused[k]] for k in sel], dtype=np.int64)
    rows = np.repeat(offsets + 2 - starts, counts) + np.arange(int(counts.sum()))
    t = table[rows]
    c, bound = _imdb_terms(tuple(np.concatenate([plans[k].groups[j] for k in sel])
                                 for j in range(3)), opts)  # fmt: skip
    for arr, col in ((res.lower, 3), (res.upper, 2), (res.estimate, 5)):
        arr[at[sel], 2] = _segment_means(c * (bound - t[:, col]), starts, counts)


def _layer_coords(plan, opts: Options, table: np.ndarray, off: int,
                  lean: bool = False) -> tuple[np.ndarray, bool]:  # fmt: skip
    """``(3, 4)``: lower bounds, upper bounds and estimates of the coordinate (NaN where
    undefined) of one planned layer, and whether it passes the Ramanujan gate; ``table`` the
    :func:`_sv_table` of all matrices, this layer's from ``off``. ``lean``: only ``IMDB_Δr``
    (the other entries stay NaN)."""
    out = np.full((3, 4), np.nan)
    L = plan.layer
    if not L.n_edges or min(L.n_out_active, L.n_in_active) < 2:
        return out, False
    binary, weighted, groups, g_binary, g_weighted = _layout(plan)
    d_out = L.n_edges / L.n_out_active
    d_in = L.n_edges / L.n_in_active
    gated = _gate_ok(opts.gate, d_out, d_in) and binary is not None
    if gated and not lean:
        bound = math.sqrt(d_in - 1) + math.sqrt(d_out - 1)
        _, _, s2_lo, s2_hi, _, e2 = table[off + binary]
        out[:, 0] = (bound - s2_hi, bound - s2_lo, bound - e2)
    if weighted is not None and not lean:
        s1_lo, s1_hi, s2_lo, s2_hi, e1, e2 = table[off + weighted]
        out[:, 1] = (s1_lo - s2_hi, s1_hi - s2_lo, e1 - e2)
    if groups is not None:
        d = groups[0]
        c, bound = _imdb_terms(groups, opts)
        t = table[off + g_binary : off + g_binary + d.size]
        one = np.array([d.size])
        for row, col in enumerate((3, 2, 5)):  # σ₂ upper, lower, estimate
            out[row, 2] = _segment_means(c * (bound - t[:, col]), _FIRST, one)[0]
        if g_weighted is not None and not lean:
            t = table[off + g_weighted : off + g_weighted + d.size]
            lam = np.stack([c * (t[:, 0] - t[:, 3]), c * (t[:, 1] - t[:, 2]),
                            c * (t[:, 4] - t[:, 5])], 1)  # fmt: skip
            out[:, 3] = lam.mean(axis=0)
    return out, gated


def _rank_part(part: _Part, raws, opts: Options, selection, steps: int,
               bounds: str = "all", lean: bool = False,
               floor: np.ndarray | None = None) -> _Part:  # fmt: skip
    """Plan the layers, then bound their matrices: the IMDB groups' binary matrices (whose σ₂
    lower bounds decide the IMDB criterion's upper bound) with ``steps`` Lanczos steps, the
    others with :data:`OTHER_STEPS` (their bounds feed the full-spectrum distance, whose upper
    bound is loose anyway: σ₂ ≤ σ₁).

    ``bounds="imdb"``: σ₁'s upper bound from ``√(‖B‖₁‖B‖∞)`` instead of the Collatz–Wielandt
    pass (two matrix products fewer per matrix): the lower bounds and the estimates are the
    same bits, so the IMDB criterion's upper bound (from the σ₂ lower bounds of the groups)
    changes only by its safety margin (:data:`MARGIN` of σ₁'s upper bound); the other upper
    bounds are looser.

    ``lean``: the groups' binary matrices only (:func:`_kernels.rank_layer` ``lean`` for a
    unit-valued layer; the same bits for them), the others' bounds stay 0 with 0 steps.

    ``floor`` (lean only; ``(len(raws),)``): the layers ranked by :func:`_kernels.rank_layer`
    get :data:`FIRST_STEPS` steps per group first; the groups of those whose ``IMDB_Δr`` upper
    bound is not below their floor then go on to ``steps`` (resumed, in the same call)."""
    groups: list = []  # (matrix offset, job) of IMDB binary blocks
    others: list = []
    fused: list = []  # (matrix offset, lo, hi, steps, est) of layers ranked by _kernels.rank_layer
    two = floor is not None and lean and steps > FIRST_STEPS
    rule = _floor_rule(opts)
    n_mat = 0
    upper = bounds == "all"
    for at_raw, raw in enumerate(raws):
        part.offsets.append(n_mat)
        if _fusable(raw, selection):
            f = floor[at_raw] if two else np.nan
            plan, *got = _rank_fused(raw, opts, selection, steps, upper, lean,
                                     FIRST_STEPS if two else 0, f, rule)  # fmt: skip
            fused.append((n_mat, *got))
            n_mat += plan.n_mat
            part.plans.append(plan)
            continue
        plan = _plan_layer(raw, opts, selection)
        first = set(_imdb_binary(plan))
        k = 0
        for job in plan.jobs:
            count = job_count(job)
            (groups if k in first else others).append((n_mat + k, count, job))
            k += count
        n_mat += plan.n_mat
        part.plans.append(plan)
    part.lo, part.hi = np.zeros((n_mat, 2)), np.zeros((n_mat, 2))
    part.steps = np.zeros(n_mat, dtype=np.int64)
    for off, lo, hi, st, _ in fused:
        part.lo[off : off + len(lo)], part.hi[off : off + len(lo)] = lo, hi
        part.steps[off : off + len(lo)] = st
    for items, budget in ((groups, steps), (others, min(steps, OTHER_STEPS))):
        if not items or (lean and items is others):
            continue
        lo, hi, st = top2_bounds_batch(*pack([job for _, _, job in items]), RANK_TOL, budget,
                                       DENSE_MAX_SIDE, upper)  # fmt: skip
        at = np.concatenate([np.arange(o, o + c) for o, c, _ in items])
        part.lo[at], part.hi[at], part.steps[at] = lo, hi, st
    if two:  # the estimates: the fused layers' first pass, whatever the floors
        part.est = part.lo.copy()
        for off, lo, _, _, est in fused:
            part.est[off : off + len(lo)] = est
    return part


#: A layer's IMDB bound counts as below its floor only below ``floor − FLOOR_MARGIN·max(1,
#: |floor|)``: covers the rounding of the bound's mean and the 27-bit rounding PAGS compares at.
FLOOR_MARGIN = 1e-6


#: The quantities :func:`_kernels.rank_layer` plans (the ranking selection's).
_FUSED_QUANTITIES = frozenset({"sv_binary", "sv_weighted", "imdb_groups", "imdb_weighted"})
_TABLE: list[np.ndarray] = [np.zeros(0)]
_NO_WEIGHTS = np.zeros(0)


def _imdb_binary(plan) -> list[int]:
    """The plan's matrices (indices) that are its IMDB groups' binary ones: the matrices whose
    σ₂ lower bounds decide the IMDB criterion's upper bound."""
    return [
        i for key, i in plan.slots.items() if isinstance(key, tuple) and key[0] == "imdb_groups"
    ]


def _fusable(raw: _Raw, selection) -> bool:
    """Whether :func:`_rank_fused` can rank the layer: unit values (a linear layer or the
    unrolled conv reading) and the ranking selection's quantities."""
    return raw.data is None and selection.quantities == _FUSED_QUANTITIES


def _start_table(n: int) -> np.ndarray:
    """The Lanczos start vectors' table (:func:`_kernels._gaussians`, a pure function of the
    position), grown as needed and shared."""
    table = _TABLE[0]
    if table.size < n:  # grown locally: another thread may replace the shared one meanwhile
        table = _TABLE[0] = _gaussians(max(n, 2 * table.size))
    return table


class _FusedPlan(NamedTuple):
    """What :func:`_layer_coords` reads of a plan, for a layer ranked by
    :func:`_kernels.rank_layer` (its matrices in that kernel's order: the whole pattern's binary
    and weighted ones, then the groups' binary ones, then their weighted ones);
    :meth:`LayerBounds.exact` plans it fully from ``raw``."""

    layer: LayerCounts
    groups: tuple  # (d, n_s, n_r) of the IMDB groups, float64 arrays
    n_mat: int
    raw: _Raw


def _rank_fused(raw: _Raw, opts: Options, selection, steps: int, upper: bool,
                lean: bool, first: int, floor: float, rule: np.ndarray):  # fmt: skip
    """One layer through :func:`_kernels.rank_layer`: the same matrices as
    :func:`~masktopo.analysis.metrics._plan_layer` plans for the ranking selection, and the
    same bounds as :func:`_kernels.top2_bounds_batch` gives for them (the same bits; with
    ``lean`` only the groups' binary matrices, the other slots hold 0, and ``raw`` needs no
    weights). ``first``, ``floor`` (``lean``): the groups' first pass and the layer's floor
    (:func:`_kernels.rank_layer`; ``rule``: :func:`_floor_rule`). Returns the plan, the
    bounds, steps and estimates' lower bounds per matrix."""
    w = _NO_WEIGHTS if lean else raw.wdata.astype(np.float64, copy=False)
    table = _start_table(max(raw.n_out, raw.n_in, 1))
    n_o, n_i, d, size, n_r, lo, hi, st, est = rank_layer(
        raw.pos, raw.n_out, raw.n_in, w, *_imdb_rule(opts), steps, OTHER_STEPS, RANK_TOL,
        DENSE_MAX_SIDE, upper, table, lean, first, float(floor), rule,
    )  # fmt: skip
    layer = LayerCounts(raw.n_out, raw.n_in, raw.numel, raw.nnz, int(n_o), int(n_i))
    groups = (d, size.astype(np.float64), n_r.astype(np.float64))
    n_mat = 2 + 2 * d.size if raw.nnz else 0
    return _FusedPlan(layer, groups, n_mat, raw), lo[:n_mat], hi[:n_mat], st[:n_mat], est[:n_mat]


def _floor_rule(opts: Options) -> np.ndarray:
    """How :func:`_kernels.rank_layer` compares a layer's ``IMDB_Δr`` upper bound with its floor:
    ``(cheeger, margin, sv_floor, floor_margin)``, the bound as :func:`_layer_coords` evaluates
    it (:func:`_imdb_terms`'s weights, :func:`_sv_table`'s widening) and :data:`FLOOR_MARGIN`."""
    return np.array([1.0 if opts.imdb == "n23" else 0.0, MARGIN, _FLOOR, FLOOR_MARGIN])


def _bounds_batched(mats, steps: int, device) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~masktopo.analysis._kernels.top2_bounds_batch` on the batched (CUDA) route: the
    matrices densified on ``device`` and bucketed by padded shape as
    :func:`~masktopo.analysis.spectral.solve_many` does (zero padding changes no singular
    value), then per bucket a batched Lanczos of ``min(steps, side)`` steps on ``BBᵀ`` with full
    reorthogonalization, the top two Ritz vectors ``W`` orthonormalized (QR), ``lo = σ(BᵀW)``
    (Cauchy interlacing) and ``hi₁`` the Collatz–Wielandt bound ``max_i (Gw)_i/w_i`` for
    ``w = G(|y₁| + δ)`` (``hi₂ = hi₁``). The same bounds as the compiled kernel's (not the same
    bits), in float64."""
    lo = np.zeros((len(mats), 2))
    hi = np.zeros((len(mats), 2))
    for chunk, B in dense_batches(mats, device, 1 << 26):
        side = max(min(mats[i].shape) for i in chunk)
        k = max(2, min(steps, side))
        l_, h_ = _lanczos_bounds(B, k)
        lo[chunk], hi[chunk] = l_.cpu().numpy(), h_.cpu().numpy()
    return lo, hi


def _lanczos_bounds(B: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on σ₁, σ₂ of every matrix of the batch ``B`` (b, m, n), ``m ≤ n``."""
    b, m, _ = B.shape
    Bt = B.transpose(1, 2)

    def gram(x):  # (b, m) -> (b, m): B Bᵀ x
        return (B @ (Bt @ x.unsqueeze(-1))).squeeze(-1)

    g = torch.Generator(device="cpu").manual_seed(0x5EED)
    q = torch.randn(m, generator=g, dtype=torch.float64).to(B.device).expand(b, m)
    q = q * (B.abs().sum(-1) > 0)  # start on the rows that exist
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-300)
    Q = torch.zeros((b, k, m), dtype=torch.float64, device=B.device)
    T = torch.zeros((b, k, k), dtype=torch.float64, device=B.device)
    for j in range(k):
        Q[:, j] = q
        z = gram(q)
        T[:, j, j] = (q * z).sum(1)
        for _ in range(2):  # full reorthogonalization, twice
            z = z - (Q[:, : j + 1].transpose(1, 2) @ (Q[:, : j + 1] @ z.unsqueeze(-1))).squeeze(-1)
        beta = z.norm(dim=1)
        if j + 1 < k:
            T[:, j, j + 1] = T[:, j + 1, j] = beta
            scale = T[:, : j + 1, : j + 1].abs().amax(dim=(1, 2)).clamp_min(1e-300)
            ok = beta > 1e-10 * scale  # Krylov space exhausted: continue with zeros
            q = torch.where(ok[:, None], z / beta.clamp_min(1e-300)[:, None], torch.zeros_like(z))
    _, S = torch.linalg.eigh(T)
    Y = (Q.transpose(1, 2) @ S[..., -2:].flip(-1)).contiguous()  # (b, m, 2): top two Ritz vectors
    W, _ = torch.linalg.qr(Y)
    lo = torch.linalg.svdvals(Bt @ W)  # (b, 2), descending: lower bounds (interlacing)
    y = Y[..., 0].abs()
    x = y + 1e-6 * y.amax(dim=1, keepdim=True).clamp_min(1e-300)
    w = gram(x)
    v = gram(w)
    ratio = torch.where(w > 0, v / w.clamp_min(1e-300), torch.zeros_like(v))
    top = torch.maximum(ratio.amax(dim=1).sqrt(), lo[:, 0])
    return lo, torch.stack([top, top], dim=1)


def _exact_rows(plans, opts: Options, names: list[str], device=None, route="auto") -> list[dict]:
    """The exact rows of planned layers (the exact engine or the batched route, then the metric
    registry), as :func:`~masktopo.analysis.metrics.layer_metric_rows` computes them."""
    jobs, offsets = [], []
    n_mat = 0
    for plan in plans:
        offsets.append(n_mat)
        n_mat += plan.n_mat
        jobs.extend(plan.jobs)
    if device is not None:
        svals = solve_many(_expand(jobs), 2, device=device, route=route)
    else:
        svals = solve_top2(jobs) if jobs else np.zeros((0, 2))
    return [_row(plan, svals, off, opts, names) for plan, off in zip(plans, offsets, strict=True)]


def _row(plan, svals: np.ndarray, off: int, opts: Options, names: list[str]) -> dict:
    """The metrics ``names`` of one planned layer whose matrices' singular values are
    ``svals[off:]`` (the metric registry, as the analysis computes them)."""
    values = _finish(plan, {key: svals[off + i] for key, i in plan.slots.items()}, opts)
    return {n: values[n] for n in names}


#: The kinds of a plan's matrices for :func:`_screened_rows`: the whole pattern's binary
#: matrix, the IMDB groups' binary ones, and the others (weighted).
_KINDS = ("binary", "groups", "weighted")


def _job_kinds(plan) -> dict[str, tuple[list, list]]:
    """A plan's jobs by :data:`_KINDS`, each with the plan's index of its first matrix."""
    first = {i: key for key, i in plan.slots.items()}
    out: dict[str, tuple[list, list]] = {kind: ([], []) for kind in _KINDS}
    k = 0
    for job in plan.jobs:
        key = first[k]
        if key == "sv_binary":
            kind = "binary"
        elif isinstance(key, tuple) and key[0] == "imdb_groups":
            kind = "groups"
        else:
            kind = "weighted"
        out[kind][0].append(job)
        out[kind][1].append(k)
        k += job_count(job)
    return out


def _matrix_indices(jobs: list, firsts: list, offset: int) -> list[np.ndarray]:
    """The matrix indices of ``jobs`` whose first matrices are ``firsts`` in a plan placed at
    ``offset``."""
    return [np.arange(offset + k, offset + k + job_count(J))
            for J, k in zip(jobs, firsts, strict=True)]  # fmt: skip


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _screened_rows(plans, opts: Options, names: list[str], screen) -> list[dict | None]:
    """:func:`_exact_rows` on the CPU in stages, so that ``screen(k, lower, upper)`` (``k`` the
    plans' positions, ``(n, 4)`` rigorous bounds of their coordinates) can drop the layers it
    does not need before their costlier matrices are solved:

    1. the whole pattern's binary matrix exactly (``Δr`` exact up to :data:`MARGIN`), the IMDB
       groups' binary ones bounded from :data:`SCREEN_GROUP_STEPS` Lanczos steps and the
       weighted ones from :data:`SCREEN_STEPS` (Collatz–Wielandt upper bounds): most layers
       that reach PAGS's exact pass fall below the best's here (n = 1000: 808 of 1206);
    2. the groups' binary matrices of the layers kept, exactly (``IMDB_Δr`` exact): the
       screen sees those layers again;
    3. the weighted matrices of the layers still kept, exactly.

    The rows of the layers kept equal :func:`_exact_rows`'s bit for bit (each matrix is solved
    alone as in a pair: the same bits); the others' are None."""
    kinds = [_job_kinds(plan) for plan in plans]
    offsets = np.concatenate([[0], np.cumsum([plan.n_mat for plan in plans])]).tolist()

    def gather(kind: str, which) -> tuple[list, np.ndarray]:  # jobs and their matrices
        jobs = [J for j in which for J in kinds[j][kind][0]]
        at = _cat([m for j in which for m in _matrix_indices(*kinds[j][kind], offsets[j])])
        return jobs, at

    every = range(len(plans))
    svals = np.full((offsets[-1], 2), np.nan)
    jobs, at = gather("binary", every)
    if jobs:
        svals[at] = solve_top2(jobs)
    lo, hi = svals.copy(), svals.copy()
    for kind, steps in (("weighted", SCREEN_STEPS), ("groups", SCREEN_GROUP_STEPS)):
        jobs, at = gather(kind, every)
        if jobs:
            lo[at], hi[at], _ = top2_bounds_batch(*pack(jobs), RANK_TOL, steps, DENSE_MAX_SIDE,
                                                  True)  # fmt: skip

    def kept(which: list[int]) -> list[int]:
        table = _sv_table(np.nan_to_num(lo), np.nan_to_num(hi))
        bounds = np.array([_layer_coords(plans[j], opts, table, offsets[j])[0][:2]
                           for j in which]).reshape(len(which), 2, 4)  # fmt: skip
        keep = np.asarray(screen(np.array(which, dtype=np.int64), bounds[:, 0], bounds[:, 1]),
                          dtype=bool)  # fmt: skip
        return [j for j, k in zip(which, keep.tolist(), strict=True) if k]

    wanted = kept(list(every))
    jobs, at = gather("groups", wanted)
    if jobs:
        svals[at] = lo[at] = hi[at] = solve_top2(jobs)
        wanted = kept(wanted)
    jobs, at = gather("weighted", wanted)
    if jobs:
        svals[at] = solve_top2(jobs)
    rows: list[dict | None] = [None] * len(plans)
    for j in wanted:
        rows[j] = _row(plans[j], svals, offsets[j], opts, names)
    return rows


class LayerBounds:
    """What :func:`rank_layers` returns for ``N`` layers.

    Attributes
    ----------
    lower, upper, estimate : numpy.ndarray
        ``(N, 4)`` bounds and Ritz estimates of :data:`COORDINATES` (NaN where undefined; the
        definedness is structural, so it is the exact value's). Without ``estimates`` only the
        ``IMDB_Δr`` column is filled (the others are NaN: not computed).
    valid : numpy.ndarray
        ``(N,)`` bool: the layer passes the Ramanujan gate (structural; Δr and λ are defined).
    estimated : bool
        Whether every entry was bounded and estimated (:func:`rank_layers` ``estimates``).
    n_edges : numpy.ndarray
        ``(N,)`` int64 edge counts (exact).
    steps : int
        Lanczos steps taken over all matrices.
    """

    def __init__(self, n: int, opts: Options, names: list[str], device=None, route="auto",
                 layers=None, estimated: bool = True):  # fmt: skip
        self._device, self._route = device, route
        self.lower = np.full((n, 4), np.nan)
        self.upper = np.full((n, 4), np.nan)
        self.estimate = np.full((n, 4), np.nan)
        self.valid = np.zeros(n, dtype=bool)
        self.estimated = estimated
        self.n_edges = np.zeros(n, dtype=np.int64)
        self.steps = 0
        self._layers = layers  # (name, mask, weight): a layer ranked without its weights
        self._plans: list = [None] * n
        self._opts = opts
        self._names = names
        self._selection = select(names)

    def _plan(self, i: int):
        """Layer ``i``'s full plan (a layer ranked by the fused kernel is planned now, as the
        analysis plans it)."""
        plan = self._plans[i]
        if isinstance(plan, _FusedPlan):
            raw = plan.raw
            if raw.wdata is None:  # ranked lean: gather its weights now
                raw = _extract_any(*self._layers[i], self._opts)
            plan = self._plans[i] = _plan_layer(raw, self._opts, self._selection)
        return plan

    def exact(self, index: Sequence[int]) -> np.ndarray:
        """``(len(index), 4)`` exact coordinates of the layers ``index`` (NaN where undefined),
        equal to :func:`~masktopo.analysis.metrics.layer_metric_rows`'s values."""
        return self.exact_screened(index, None)[0]

    def exact_screened(self, index: Sequence[int], screen) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`exact` of the layers ``index`` that ``screen`` keeps: ``(coordinates,
        finished)``, the coordinates NaN throughout where ``finished`` (bool) is False.

        ``screen`` (None: keep every layer): a function of ``(i, lower, upper)`` — layer
        indices and ``(n, 4)`` rigorous bounds of their coordinates — returning which to
        finish. It is called twice (:func:`_screened_rows`): first for every layer, with ``Δr``
        exact (up to :data:`MARGIN`) and the other entries bounded from a few Lanczos steps;
        then for the layers it kept, with ``IMDB_Δr`` exact too. Only the layers kept both
        times get their weighted matrices solved exactly. PAGS drops the layers whose bounds
        cannot beat the best: six in seven of those that reach its exact pass (n = 1000), most
        of them at the first call. The batched route finishes every layer."""
        index = [int(i) for i in index]
        out = np.full((len(index), 4), np.nan)
        finished = np.ones(len(index), dtype=bool)
        if not index:
            return out, finished
        plans = [self._plan(i) for i in index]
        if self._device is not None:  # the batched route: one call, as the analysis's
            rows = dict(enumerate(_exact_rows(plans, self._opts, self._names, self._device,
                                              self._route)))  # fmt: skip
            for k in range(len(index)):
                out[k] = [rows[k][n] for n in COORDINATES]
            return out, finished
        at = np.array(index, dtype=np.int64)

        def solve(ks):
            chosen = [plans[k] for k in ks]
            if screen is None:
                return _exact_rows(chosen, self._opts, self._names)
            pick = at[np.asarray(list(ks), dtype=np.int64)]
            return _screened_rows(chosen, self._opts, self._names,
                                  lambda j, lo, hi: screen(pick[j], lo, hi))  # fmt: skip

        with one_blas_thread():
            total = sum(int(self.n_edges[i]) for i in index)
            if use_workers(total) and len(index) > 1:
                rows = {}
                for part, got in in_threads([max(1, int(self.n_edges[i])) for i in index], solve):
                    rows.update(zip(part, got, strict=True))
            else:
                rows = dict(enumerate(solve(range(len(index)))))
        for k in range(len(index)):
            if rows[k] is None:
                finished[k] = False
            else:
                out[k] = [rows[k][n] for n in COORDINATES]
        return out, finished


def _rank_batched(part: _Part, raws, opts: Options, selection, steps: int, device,
                  lean: bool = False) -> _Part:  # fmt: skip
    """:func:`_rank_part` on the batched route (every matrix with ``steps`` steps; ``lean``:
    only the IMDB groups' binary matrices, the others' bounds stay 0 with 0 steps)."""
    jobs: list = []
    chosen: list[int] = []  # the matrices bounded
    n_mat = 0
    for raw in raws:
        plan = _plan_layer(raw, opts, selection)
        part.offsets.append(n_mat)
        if lean:
            chosen.extend(n_mat + i for i in _imdb_binary(plan))
        n_mat += plan.n_mat
        jobs.extend(plan.jobs)
        part.plans.append(plan)
    at = np.array(sorted(chosen), dtype=np.int64) if lean else np.arange(n_mat)
    part.lo, part.hi = np.zeros((n_mat, 2)), np.zeros((n_mat, 2))
    part.steps = np.zeros(n_mat, dtype=np.int64)
    if at.size:
        part.lo[at], part.hi[at] = _bounds_batched(_expand_some(jobs, at), steps, device)
        part.steps[at] = steps
    return part


def _take(floor: np.ndarray | None, idx) -> np.ndarray | None:
    return None if floor is None else floor[np.asarray(list(idx), dtype=np.int64)]


def _expand_some(jobs, wanted: np.ndarray) -> list[Parts]:
    """The matrices ``wanted`` (ascending indices into :func:`_expand`'s list of ``jobs``),
    unpacked; the others are not (a lean ranking bounds only the IMDB groups' binary ones)."""
    counts = [job_count(J) for J in jobs]
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    owner = np.searchsorted(starts, wanted, side="right") - 1
    return [
        Parts(*unpack(jobs[j], i - int(starts[j]))) if isinstance(jobs[j], Block) else jobs[j]
        for i, j in zip(wanted.tolist(), owner.tolist(), strict=True)
    ]


def rank_layers(
    layers,
    *,
    options: Options | None = None,
    steps: int | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
    bounds: str = "all",
    estimates: bool = True,
    floor: np.ndarray | None = None,
) -> LayerBounds:
    """Bounds on the full-spectrum coordinate of many weighted layers (module docstring).

    Parameters
    ----------
    layers : sequence of (name, mask, weight)
        Bool masks (or :class:`KeptPositions`) with their weights (every layer needs one); a
        mask may carry its positions (:func:`masktopo.masks.attach_positions`).
    options : Options, optional
        Conv reading, gate and IMDB variant (default :class:`Options()`; empty layers allowed).
    steps : int, optional
        Lanczos steps per matrix (default :data:`RANK_STEPS`).
    device : str or torch.device, optional
        ``"cuda"``: the batched route (:func:`_bounds_batched`) on the GPU for every layer when
        one of them has a matrix side of at least
        :data:`~masktopo.analysis.spectral.DEVICE_MIN_SIDE`, the CPU route otherwise
        (:func:`~masktopo.analysis.spectral.on_device`); default the CPU.
    route : {"auto", "batched"}
        ``"batched"``: the batched route on any device, the CPU too (the CUDA code path, for
        tests). The exact pass (:meth:`LayerBounds.exact`) then takes the same route.
    bounds : {"all", "imdb"}
        ``"all"``: tight rigorous bounds of every coordinate entry. ``"imdb"``: tight only for
        the upper bound of ``IMDB_Δr`` (what PAGS's layerwise rule can use: the full-spectrum
        distance's upper bound hardly ever decides, since no cheap upper bound on σ₂ below σ₁
        exists); the other upper bounds stay rigorous but looser (``σ₁ ≤ √(‖B‖₁‖B‖∞)``),
        the lower bounds and estimates are the same and the pass costs about a sixth less.
        The CPU route only (the batched route bounds as ``"all"``).
    estimates : bool
        False (with ``bounds="imdb"`` only): bound and estimate ``IMDB_Δr`` alone — a layer's
        IMDB groups' binary matrices, not its whole patterns nor any weighted matrix, and its
        weights are gathered only when :meth:`LayerBounds.exact` needs them (the batched
        route gathers and plans every layer in full, and bounds only those matrices). The IMDB
        bounds are the same bits on the CPU (on the batched route the same up to rounding:
        its buckets hold other matrices); the pass costs about half (docs/performance.md). The
        other columns are NaN (not computed); :attr:`LayerBounds.valid` still says which layers
        are gated.
    floor : numpy.ndarray, optional
        ``(len(layers),)``, with ``estimates=False`` on the CPU route: how tight each layer's
        ``IMDB_Δr`` upper bound needs to be (unit-valued layers: linear ones and the unrolled
        conv reading; the others are bounded with ``steps``). Every IMDB group first gets
        :data:`FIRST_STEPS` Lanczos steps; a layer whose upper bound is then below its floor
        (by :data:`FLOOR_MARGIN`) keeps that bound, the other layers' groups go on to ``steps``
        (resumed: the bounds ``steps`` gives alone, to rounding). PAGS passes the best's IMDB
        criterion (a layer below it cannot be accepted): the layers whose ``steps`` bound
        reaches the floor reach its exact pass, as with ``steps`` for all, for about a quarter
        less work. NaN: no floor for that layer. The estimates are then the first pass's for
        every layer, whatever the floors.

    Returns
    -------
    LayerBounds
        Bounds and estimates of every layer, and the plans for :meth:`LayerBounds.exact`.
    """
    base = Options() if options is None else options
    opts = Options(base.conv, base.gate, base.imdb, base.narc, allow_empty=True)
    if steps is None:
        steps = RANK_STEPS
    elif not is_integer(steps) or steps < 1:
        raise MaskValidationError(f"steps (Lanczos steps per matrix) must be an integer >= 1, "
                                  f"got {steps!r}")  # fmt: skip
    steps = int(steps)
    if bounds not in BOUNDS:
        raise ValueError(f"bounds must be one of {BOUNDS}, got {bounds!r}")
    if not estimates and bounds != "imdb":
        raise ValueError("estimates=False bounds IMDB_Δr alone: it needs bounds='imdb'")
    lean = not estimates
    layers = list(layers)
    if floor is not None:
        floor = np.asarray(floor, dtype=np.float64).reshape(-1)
        if floor.size != len(layers):
            raise ValueError(f"floor has {floor.size} values for {len(layers)} layers")
    names = _names()
    selection = select(names)
    dev = None if device is None else torch.device(device)
    # the batched route for every layer once one of them goes to the device (on_device(): on
    # CUDA, a matrix side of DEVICE_MIN_SIDE or more); ResNet-sized layers stay on the CPU route
    batched = any(on_device(layer_side(m, opts), dev, route) for _, m, _ in layers)
    res = LayerBounds(len(layers), opts, names, *((dev or torch.device("cpu"), route)
                                                  if batched else (None, "auto")),
                      layers=layers, estimated=estimates)  # fmt: skip
    if not layers:
        return res
    # lean on the CPU: no |W| is gathered for the ranking (the batched route plans the layers
    # in full, so that their exact pass finds every matrix planned, and bounds the groups' binary
    # matrices alone)
    gather = not lean or batched

    def extract(idx):
        return [_extract_any(*layers[i], opts, gather) for i in idx]

    sizes = np.array([_size(m) for _, m, _ in layers], dtype=np.int64)
    with one_blas_thread():
        if batched:
            idx = list(range(len(layers)))
            parts = [_rank_batched(_Part(idx), extract(idx), opts, selection, steps,
                                   res._device, lean)]  # fmt: skip
        elif use_workers(int(sizes.sum())):
            parts = [got for _, got in in_threads(
                sizes,
                lambda job: _rank_part(_Part(list(job[0])), job[1], opts, selection, steps,
                                       bounds, lean, _take(floor, job[0])),
                lambda idx: (idx, extract(idx)),
                _REMOTE_SHARE,
            )]  # fmt: skip
        else:
            idx = list(range(len(layers)))
            parts = [_rank_part(_Part(idx), extract(idx), opts, selection, steps, bounds, lean,
                                floor)]  # fmt: skip
    for part in parts:
        res.steps += int(part.steps.sum())
        table = _sv_table(part.lo, part.hi, part.est)
        for i, plan in zip(part.index, part.plans, strict=True):
            res._plans[i] = plan
            res.n_edges[i] = plan.layer.n_edges
        if lean:
            _lean_coords(res, part, opts, table)
            continue
        for i, plan, off in zip(part.index, part.plans, part.offsets, strict=True):
            coords, res.valid[i] = _layer_coords(plan, opts, table, off)
            res.lower[i], res.upper[i], res.estimate[i] = coords
    return res
