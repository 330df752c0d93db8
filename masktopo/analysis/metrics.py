r"""Named layer metrics of mask graphs and their network aggregation.

Every metric is computed on a layer's biadjacency ``B`` after isolated nodes are dropped
(:mod:`masktopo.analysis.graph`). Write ``|E|`` for the edge count (the mask's nnz, with
multiplicity when a conv is *rolled*), ``n_out'`` and ``n_in'`` for the active (non-isolated)
outputs and inputs, ``d̄_out = |E|/n_out'`` (mean fan-in of the outputs) and
``d̄_in = |E|/n_in'`` (mean fan-out of the inputs), and ``σ₁ ≥ σ₂ ≥ …`` for singular values.

Spectral ([I23]_, [N23]_; pags-spec §2-3)
    ``mu0 = σ₁(B)``; ``mu_hat = σ₂(B)`` (the largest non-trivial eigenvalue of the bipartite
    adjacency); ``spectral_gap = mu0 − mu_hat``.
Ramanujan ([MSS15]_ bound with average degrees, as both papers' code does)
    ``ramanujan_bound = √(d̄_in − 1) + √(d̄_out − 1)``; ``ramanujan_gap = bound − mu_hat`` (Δr,
    > 0 means the layer meets the bound); ``ramanujan_gap_norm = Δr / bound``;
    ``is_ramanujan = Δr ≥ 0``; ``ramanujan_gap_spectral = 2√(mu0 − 1) − mu_hat`` (I23's Δs).
Weighted ([N23]_), on ``|W ⊙ M|``
    ``weighted_mu0``, ``weighted_mu_hat``, ``weighted_spectral_gap`` (λ = σ₁ − σ₂).
IMDB, nested regular subgraphs ([I23]_, [N23]_; pags-spec §3.3)
    Inputs are grouped by fan-out degree ``d``; group ``G_d = B[:, S_d]`` is d-left-regular.
    ``"n23"`` variant (default): groups with ``|S_d| ≥ 2`` passing the gate, Cheeger weight
    ``c_d = max(|S_d|, |R_d|)/(|S_d| + |R_d| − 1)``, ``imdb_ramanujan_gap = mean_d c_d·Δr(G_d)``,
    ``imdb_weighted_gap = mean_d c_d·λ(G_d)``. ``"i23"``: groups with ``|S_d| ≥ 3``, plain means.
    ``imdb_ramanujan_gap_norm = mean_d Δr(G_d)/bound(G_d)`` (I23's plotted "IMDB");
    ``imdb_n_groups`` counts the groups used.
NaRC ([I23]_ code; UNCONFIRMED against the paper text, pags-spec A8)
    ``[(mu_hat²/4 + 1)·√(n_L n_R) − |e − (d̄_L/n_out)·n_L n_R|] / (n_in·n_out)`` with inputs as
    the left side, ``e = 2|E|`` ("directed", code-faithful) or ``|E|`` ("undirected").
Full-spectrum coordinate ([N23]_)
    ``full_spectrum_norm = ‖(Δr, λ, IMDB_Δr, IMDB_λ)‖₂`` with undefined entries counted as 0, and
    Δr, λ counted as 0 when the layer fails the gate (the N23 code computes λ after the gate).
Expansion ([Chung97]_)
    ``normalized_spectral_gap = 1 − σ₂(D_out^{-½} B D_in^{-½})``, the second-smallest eigenvalue
    λ₂ of the normalized Laplacian; Cheeger: ``conductance_lower = λ₂/2 ≤ h(G) ≤
    conductance_upper = √(2λ₂)``.
Structure
    ``n_out``, ``n_in`` (biadjacency dims: unrolled ``n_in = C_in·k_h·k_w``), ``n_edges``,
    ``numel``, ``density``, ``n_out_active``, ``n_in_active``, ``deg_out_mean``, ``deg_in_mean``,
    ``n_components`` (connected components among active nodes).

Every metric is one function of :mod:`masktopo.analysis.metric_defs` registered in :data:`METRICS`
with its dependencies (:mod:`masktopo.analysis._registry`); a layer is *planned* (structure, the
spectral jobs of the quantities the selected metrics need), all jobs are solved in one call, and
the metrics are *finished* in dependency order. :func:`register_metric` (or the :func:`metric`
decorator) adds one; :func:`unregister_metric` removes it; :func:`metric_table_markdown` renders the
table of docs/metrics.md.

Validity gates (pags-spec §3.7): ``"n23"`` requires ``d̄_out ≥ 3`` and ``d̄_in > 1``, ``"i23"``
requires both ``≥ 3``; for IMDB groups the n23 gate swaps the sides. ``mu_hat`` needs at least 2
active nodes on each side. A metric that is undefined is NaN (``None`` for ``is_ramanujan``) and
the ``reason`` entry says why; it is never reported as 0.

Numerical floor: a singular value below :data:`SV_FLOOR` times the largest one of its matrix
(``|σ| < 1e-12·σ₁``) is reported as exactly 0. The engine is exact to about ``ε·σ₁`` (ε = 2.2e-16),
so anything smaller is rounding: e.g. ``mu_hat`` of a complete bipartite layer ``K_{m,n}`` (rank
one, σ₂ = 0) comes out of the solver as 1e-44 or so, and is reported as 0. The rule is applied
to every spectrum (binary, weighted, normalized, each IMDB group) before the metrics are finished.

Tables: :func:`analyze` gives the *layer table* (one row per layer; ``is_ramanujan`` a nullable
boolean), :func:`aggregate` the *network row* (its own names where the meaning changes: the
fraction of Ramanujan layers is ``ramanujan_fraction``, never ``is_ramanujan``).

References
----------
.. [I23] D. N. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [N23] D. N. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
.. [MSS15] A. W. Marcus, D. A. Spielman, N. Srivastava, "Interlacing families I: Bipartite
   Ramanujan graphs of all degrees", Annals of Mathematics 182 (2015).
.. [Chung97] F. R. K. Chung, "Spectral Graph Theory", AMS, 1997, ch. 2 (Cheeger inequality).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import MaskValidationError, UnknownNameError, one_line
from ..masks import check_weight, known_positions, layer_tensor
from ..options import GATES, IMDB_VARIANTS, INVALID, NARC_EDGES, Options, grouped  # noqa: F401
from ..threads import one_blas_thread
from . import metric_defs  # noqa: F401  (registers the built-in metrics)
from ._engine import DENSE_ROUTE_MIN_SIDE, Parts, dense_shape, solve_top2
from ._kernels import (
    Block,
    count_components,
    flat_kept,
    imdb_groups,
    normalized_values,
    strip_pattern,
    unpack,
)
from ._registry import (  # noqa: F401  (the registry API, public from here)
    INT_METRICS,
    METRICS,
    QUANTITIES,
    ImdbGroup,
    LayerCounts,
    Metric,
    MetricContext,
    NaN,
    Quantity,
    Selection,
    compute_metrics,
    mean_over_layers,
    metric,
    metric_names,
    metric_table_markdown,
    register_metric,
    select,
    unregister_metric,
)
from .graph import _as_mask
from .spectral import (
    JobStream,
    check_route,
    in_threads,
    on_device,
    solve_many,
    use_workers,
)


def resolve_metrics(metrics: Iterable[str] | str | None, weighted: bool) -> list[str]:
    """Validate a metric selection; None means every metric (weighted ones only with weights).

    Raises :class:`UnknownNameError` for an unknown name and :class:`MaskValidationError` when a
    weighted metric is asked for without weights.
    """
    if metrics is None:
        return metric_names(weighted)
    if isinstance(metrics, str):
        metrics = [metrics]
    elif not isinstance(metrics, Iterable):
        raise MaskValidationError(
            f"metrics must be a metric name or a list of names, not {metrics!r}"
        )
    names = []
    for item in metrics:
        for name in str(item).replace(",", " ").split():
            if name not in METRICS:
                raise UnknownNameError("metric", name, METRICS)
            if METRICS[name].weighted and not weighted:
                raise MaskValidationError(f"metric {name!r} needs weights, and none were given")
            if name not in names:
                names.append(name)
    if not names:
        raise MaskValidationError("no metric selected")
    return names


#: Relative floor of singular values: ``|σ| < SV_FLOOR·σ₁`` (σ₁ the largest singular value of the
#: same matrix) is reported as 0 (module docstring, "Numerical floor").
SV_FLOOR = 1e-12

#: The ``layer`` label of a network row (the ``level`` column says ``"network"``).
NETWORK = "(network)"

#: Network columns named differently from the layer column they summarize (one meaning per
#: column name: ``is_ramanujan`` is a layer's flag, its network summary a fraction).
NETWORK_NAMES = {"is_ramanujan": "ramanujan_fraction"}

#: Columns that label a row rather than measure it: never aggregated.
LABEL_COLUMNS = ("file", "event", "step", "epoch", "event_kind", "level", "layer", "layer_kind",
                 "kind", "shape", "reason")  # fmt: skip

#: Earlier name of :func:`~masktopo.analysis._registry.select` (what the phases below get for a
#: metric selection), kept for the kernel tests.
_groups_for = select


# --------------------------------------------------------------------------------------------
# From a mask to CSR (CPU, vectorized)
# --------------------------------------------------------------------------------------------


@dataclass
class _Pattern:
    """Stripped biadjacency as CSR pieces, shared by the binary, weighted and normalized data."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray  # binary (1) or multiplicities, float64
    unit: bool  # whether every entry of data is 1
    wdata: np.ndarray | None  # |W ⊙ M| on the same pattern, or None
    shape: tuple[int, int]

    def parts(self, data: np.ndarray) -> Parts:
        return Parts(data, self.indices, self.indptr, self.shape)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass
class _Raw:
    """What planning needs of one layer: its kept entries as positions in the ``n_out × n_in``
    biadjacency (row-major, ascending) with their values. Small enough to send to a worker."""

    name: str
    n_out: int
    n_in: int
    numel: int
    pos: np.ndarray  # int32 when the layer has fewer than 2**31 entries, else int64
    data: np.ndarray | None  # None: every value is 1 (unrolled or linear masks)
    wdata: np.ndarray | None  # |W ⊙ M| at the same positions (float32 or 64), or None

    @property
    def nnz(self) -> int:
        return int(self.pos.size)


def _indexable(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` detached, as float32 when its dtype has no indexing kernels (float8)."""
    w = weight.detach()
    return (
        w if w.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else w.float()
    )


def _extract(name: str, mask: torch.Tensor, weight: torch.Tensor | None, opts: Options) -> _Raw:
    """The kept entries of one layer (and ``|w|`` there) under the conv reading of ``opts``."""
    m = _to_numpy(mask)
    n_out = m.shape[0]
    # kept entries, C order: as attached by whoever drew them, or a scan (8 bytes at a time)
    flat = known_positions(mask)
    if flat is None:
        little = m.dtype == np.bool_ and sys.byteorder == "little"
        flat = flat_kept(m) if little else np.flatnonzero(m)
    if flat.size == 0 and not opts.allow_empty:
        raise MaskValidationError(f"layer {name!r} has an all-zero mask (no edges); "
                                  "allow_empty=True (masktopo analyze: --allow-empty-layers) "
                                  "analyzes it anyway")  # fmt: skip
    w = None
    if weight is not None:  # |w| at the kept entries only, gathered where the weight lives
        wt = _indexable(weight)
        if wt.device.type == "cpu" and wt.dtype in (torch.float32, torch.float64):
            w = np.abs(_to_numpy(wt).reshape(-1)[flat])  # float32 stays float32: exact, smaller
        else:
            idx = torch.from_numpy(flat).to(wt.device)
            w = _to_numpy(wt.reshape(-1)[idx].to(torch.float64).abs())
    if m.ndim == 2 or opts.conv == "unrolled":
        pos = flat.astype(np.int32) if m.size < 2**31 else flat  # half the bytes to a worker
        return _Raw(name, n_out, m.size // n_out, int(m.size), pos, None, w)
    n_in = m.shape[1]
    pos, inv, counts = np.unique(flat // (m.size // (n_out * n_in)), return_inverse=True,
                                 return_counts=True)  # fmt: skip
    wdata = None if w is None else np.bincount(inv, weights=w, minlength=pos.size)
    # channel pairs, row-major, with multiplicities
    return _Raw(name, n_out, n_in, int(m.size), pos, counts.astype(np.float64), wdata)


def _layer_pattern(raw: _Raw) -> _Pattern:
    """The stripped CSR pattern of one layer."""
    indices, indptr, n_o, n_i = strip_pattern(raw.pos, raw.n_out, raw.n_in)
    data = np.ones(raw.nnz) if raw.data is None else raw.data
    wdata = None if raw.wdata is None else raw.wdata.astype(np.float64, copy=False)
    return _Pattern(indptr, indices, data, raw.data is None, wdata, (n_o, n_i))


# --------------------------------------------------------------------------------------------
# One layer: plan (structure + spectral jobs), then finish (metrics from singular values)
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One planned layer: its sizes, the spectral jobs it queued and what finishing reads."""

    layer: LayerCounts
    selection: Selection
    reasons: list[str] = field(default_factory=list)
    jobs: list = field(default_factory=list)  # Parts and Blocks
    n_mat: int = 0  # matrices in jobs (a Block holds many)
    slots: dict[Any, int] = field(default_factory=dict)
    components: int = 0
    imdb_groups: list[tuple[int, int, int]] = field(default_factory=list)  # (d, |S_d|, |R_d|)

    def add_job(self, key, matrix: Parts) -> None:
        """Queue a spectral job (top two singular values of ``matrix``)."""
        self.slots[key] = self.n_mat
        self.jobs.append(matrix)
        self.n_mat += 1

    def add_block(self, keys, block: Block) -> None:
        """Queue ``block.count`` spectral jobs at once, one key each."""
        for j, key in enumerate(keys):
            self.slots[key] = self.n_mat + j
        self.jobs.append(block)
        self.n_mat += block.count


def _plan_layer(raw: _Raw, opts: Options, selection: Selection, ready=None) -> _Plan:
    """Sizes of one layer and the jobs of the quantities ``selection`` needs. ``ready``, when
    given, is called with the jobs of the whole matrix (binary, weighted, normalized) before
    the IMDB groups are planned (so that they can be solved meanwhile)."""
    pat = _layer_pattern(raw)
    n_edges = round(float(pat.data.sum()))
    n_o, n_i = pat.shape
    plan = _Plan(LayerCounts(raw.n_out, raw.n_in, raw.numel, n_edges, n_o, n_i), selection)
    if n_edges == 0:  # allowed: _extract raised otherwise
        return plan
    need = selection.quantities
    if "components" in need:  # connected components of the out–in edges: union–find, O(|E| α)
        plan.components = int(count_components(pat.indptr, pat.indices, n_o, n_i))
    if "sv_binary" in need:
        plan.add_job("sv_binary", pat.parts(pat.data))
    if "sv_weighted" in need and pat.wdata is not None:
        plan.add_job("sv_weighted", pat.parts(pat.wdata))
    if "sv_normalized" in need and min(n_o, n_i) >= 2:
        ndata = normalized_values(pat.indptr, pat.indices, pat.data, n_o, n_i)
        plan.add_job("sv_normalized", pat.parts(ndata))
    if ready is not None:
        ready(list(plan.jobs))
    binary, weighted = "imdb_groups" in need, "imdb_weighted" in need and pat.wdata is not None
    if binary or weighted:
        _plan_imdb(plan, pat, opts, binary, weighted)
    return plan


def _imdb_rule(opts: Options) -> tuple[int, bool]:
    """:func:`~masktopo.analysis._kernels.imdb_groups`'s ``(min_group, both_three)`` for the
    IMDB variant of ``opts``: N23 keeps groups of 2 or more inputs, I23 of 3 or more and gates
    both sides at degree 3."""
    return (2 if opts.imdb == "n23" else 3), opts.imdb == "i23"


def _plan_imdb(plan: _Plan, pat: _Pattern, opts: Options, binary: bool, weighted: bool) -> None:
    n_rows, n_cols = pat.shape
    # Inputs are "left" for IMDB subgraphs: d_in = d, d_out = d·size/n_r.
    d, size, n_r, indptr, indices, eid, ptr_off, nnz_off = imdb_groups(
        pat.indptr, pat.indices, pat.data, n_rows, n_cols, *_imdb_rule(opts)
    )
    if d.size == 0:
        return
    degrees = d.tolist()
    plan.imdb_groups = list(zip(degrees, size.tolist(), n_r.tolist(), strict=True))
    shapes = np.stack([size, n_r], axis=1)
    # Each group's transpose (inputs × active outputs): σ do not change under transposition.
    if binary:  # unit data: any slice of it is the groups' data (no gather)
        gdata = pat.data[: eid.size] if pat.unit else pat.data[eid]
        plan.add_block([("imdb_groups", dg) for dg in degrees],
                       Block(gdata, indices, indptr, ptr_off, nnz_off, shapes))  # fmt: skip
    if weighted:
        plan.add_block([("imdb_weighted", dg) for dg in degrees],
                       Block(pat.wdata[eid], indices, indptr, ptr_off, nnz_off, shapes))  # fmt: skip


def _quantity(name: str, plan: _Plan, sv: dict[Any, np.ndarray]) -> Any:
    """The value of quantity ``name`` (:data:`QUANTITIES`) for a finished plan."""
    if name == "components":
        return plan.components
    if name in ("imdb_groups", "imdb_weighted"):
        return [ImdbGroup(d, n_s, n_r, d, d * n_s / n_r, sv.get((name, d)))
                for d, n_s, n_r in plan.imdb_groups]  # fmt: skip
    return sv.get(name)  # singular values, or None where no job was queued


def floor_singular_values(sv: np.ndarray | None) -> np.ndarray | None:
    """Singular values with every value below the numerical floor set to exactly 0.

    The floor is relative: ``|σ| < SV_FLOOR·max|σ|`` (:data:`SV_FLOOR`, 1e-12), since the
    solvers are exact to about ``ε·σ₁`` and anything smaller is rounding.

    Parameters
    ----------
    sv : numpy.ndarray or None
        The singular values of one matrix (any order); None where no job was queued.

    Returns
    -------
    numpy.ndarray or None
        ``sv`` as float64 with the values below the floor replaced by 0 (``sv`` itself when
        none is); None for None.

    Examples
    --------
    >>> floor_singular_values(np.array([484.97, 3.9e-44])).tolist()
    [484.97, 0.0]
    """
    if sv is None:
        return None
    v = np.asarray(sv, dtype=np.float64)
    if v.size == 0:
        return v
    top = float(np.max(np.abs(v)))
    small = np.abs(v) < SV_FLOOR * top
    return np.where(small, 0.0, v) if small.any() else v


def _finish(plan: _Plan, sv: dict[Any, np.ndarray], opts: Options) -> dict[str, Any]:
    """Every metric of the plan's selection on this layer, from its singular values ``sv``
    (floored first: :func:`floor_singular_values`); the reasons of NaN values go to
    ``plan.reasons``."""
    sv = {key: floor_singular_values(values) for key, values in sv.items()}
    quantities = {q: _quantity(q, plan, sv) for q in plan.selection.quantities}
    ctx = MetricContext(plan.layer, opts, quantities, plan.reasons)
    return compute_metrics(plan.selection, ctx)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise MaskValidationError(f"device {device!r} is not a device ({one_line(e)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MaskValidationError("device 'cuda' was asked for, but CUDA is not available here")
    return device


def _run(layers, opts: Options, names: list[str], device, weighted: bool, progress=False,
         route: str = "auto"):  # fmt: skip
    selection = select(names)
    layers = list(layers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(layers), desc="graphs", unit="layer", leave=False, file=None)

    def extract(items):
        out = []
        for name, mask, weight in items:
            out.append(_extract(name, mask, weight, opts))
            if bar is not None:
                bar.update()
        return out

    try:
        # the layers whose matrix on_device() sends to the device go there, planned there when
        # dense (device_plan), else planned here; the others (every layer on the CPU with
        # route="auto") take the threaded CPU engine
        there = [on_device(layer_side(m, opts), device, route) for _, m, _ in layers]
        if not any(there):
            return _rows_parallel(layers, extract, opts, names, selection, weighted)
        from .device_plan import planned_on_device

        kind = np.array([(2 if planned_on_device(m, opts) else 1) if t else 0
                         for (_, m, _), t in zip(layers, there, strict=True)])  # fmt: skip
        out: list[dict] = [{}] * len(layers)
        for k in (0, 1, 2):
            ids = np.flatnonzero(kind == k)
            if not ids.size:
                continue
            part = [layers[i] for i in ids]
            if k == 0:
                rows = _rows_parallel(part, extract, opts, names, selection, weighted)
            elif k == 1:
                rows = _rows(extract(part), opts, names, selection, weighted, device, route)
            else:
                rows = _rows_on_device(part, opts, names, selection, device, bar)
            for i, row in zip(ids, rows, strict=True):
                out[int(i)] = row
        return out
    finally:
        if bar is not None:
            bar.close()


def _rows_on_device(layers, opts, names, selection, device, bar=None) -> list[dict]:
    """The rows of dense layers planned and solved on ``device``
    (:func:`masktopo.analysis.device_plan.plan_dense`): nothing of their size crosses to the
    host. The same rows as :func:`_rows`, to the solvers' precision."""
    from .device_plan import plan_dense

    out = []
    for _, mask, weight in layers:
        w = None if weight is None else _indexable(weight.to(device))
        counts, found = plan_dense(mask.to(device), w, _imdb_rule(opts), selection.quantities)
        plan = _Plan(LayerCounts(*counts), selection)
        plan.components = found.pop("components", 0)
        plan.imdb_groups = found.pop("imdb_groups", [])
        plan.slots = {key: i for i, key in enumerate(found)}
        plan.n_mat = len(found)
        svals = np.array(list(found.values()), dtype=np.float64).reshape(-1, 2)
        out.append(_row(plan, svals, opts, names))
        if bar is not None:
            bar.update()
    return out


def layer_side(mask, opts: Options) -> int:
    """The smaller side of a layer's biadjacency matrix under the conv reading of ``opts``.

    What :func:`~masktopo.analysis.spectral.on_device` decides a layer's route by.

    Parameters
    ----------
    mask : torch.Tensor or array-like with a ``shape``
        ``[out, in]`` or ``[out, in, *kernel]``.
    opts : Options
        ``opts.conv``: ``"unrolled"`` reads a conv as ``out × (in·k)``, ``"rolled"``
        (channel pairs) as ``out × in``.

    Returns
    -------
    int
        ``min(out, in·k)`` (unrolled or linear) or ``min(out, in)``.

    Examples
    --------
    >>> layer_side(torch.ones(64, 32, 3, 3, dtype=torch.bool), Options())
    64
    >>> layer_side(torch.ones(64, 32, 3, 3, dtype=torch.bool), Options(conv="rolled"))
    32
    """
    shape = tuple(mask.shape)
    n_out = shape[0] if shape else 0
    if len(shape) == 2 or opts.conv == "unrolled":
        return min(n_out, math.prod(shape[1:]))
    return min(n_out, shape[1])


def _kept(mask: torch.Tensor) -> int:
    known = known_positions(mask)
    if known is not None:
        return int(known.size)
    if mask.device.type == "cpu" and mask.dtype == torch.bool:
        return int(np.count_nonzero(_to_numpy(mask)))
    return int(torch.count_nonzero(mask))


#: Share of the kept entries sent to the worker: it starts while this process still extracts
#: its own half, so it can take a little more (measured on ResNet-18 PAGS chunks).
_REMOTE_SHARE = 0.52


def _rows(raws, opts, names, selection, weighted, device=None, route="auto", *,
          solve=solve_top2) -> list[dict]:  # fmt: skip
    """Plan every layer, solve all their spectra in one call, finish the rows.

    ``selection`` is ``select(names)``; ``weighted`` says whether the layers have weights (the
    selection holds weighted metrics only if so). ``solve`` solves the jobs on the CPU path
    (default in this thread)."""
    plans, jobs, offsets = [], [], []
    n_mat = 0
    # on the device path this is the only thread: plan the layers in the worker threads too
    planned = _plan_layers(raws, opts, selection) if device is not None else None
    for i, raw in enumerate(raws):
        plan = planned[i] if planned is not None else _plan_layer(raw, opts, selection)
        offsets.append(n_mat)
        n_mat += plan.n_mat
        jobs.extend(plan.jobs)
        plans.append(plan)
    if device is None:  # in this process (a worker does not start workers of its own)
        svals = solve(jobs) if jobs else np.zeros((0, 2))
    else:  # the device path: Blocks stay whole where none of their matrices goes there
        svals = solve_many(jobs, 2, device=device, route=route)
    return [_row(plan, svals[off:], opts, names) for plan, off in zip(plans, offsets, strict=True)]


def _row(plan: _Plan, svals: np.ndarray, opts: Options, names: list[str]) -> dict:
    """The metric row of a planned layer from the σ of its jobs (``svals``, from its first)."""
    values = _finish(plan, {key: svals[i] for key, i in plan.slots.items()}, opts)
    row = {n: values[n] for n in names}
    row["reason"] = "; ".join(plan.reasons)
    return row


def _dense_layer(raw: _Raw) -> bool:
    """Whether a layer's whole matrix takes the dense route (before isolated nodes are
    stripped: an estimate, which only chooses how the work is scheduled)."""
    return dense_shape((raw.n_out, raw.n_in), raw.nnz)


def _rows_streamed(raw: _Raw, opts, names, selection) -> list[dict]:
    """One large layer on the dense route: its whole-matrix spectra start in the worker threads
    while this thread plans its IMDB groups (:class:`~masktopo.analysis.spectral.JobStream`);
    then this thread solves what is left. An LLM's MLP matrix fills a chunk alone: planned
    first and then split, one thread idled through the planning. The same rows."""
    with one_blas_thread(scipy_linalg=True), JobStream() as stream:
        plan = _plan_layer(raw, opts, selection, ready=stream.add)
        stream.add(plan.jobs[len(stream) :])
        svals = stream.finish()
    return [_row(plan, svals, opts, names)]


def _plan_layers(raws, opts, selection) -> list[_Plan]:
    """:func:`_plan_layer` of every layer, split by kept entries over the threads of
    :func:`~masktopo.analysis.spectral.in_threads` when they are large enough (the planning
    kernels run without the GIL): on the device path the spectra are solved in one call on the
    accelerator, and planning the layers one after the other on the host was most of a
    Llama-2-7B block's time there (docs/performance.md, "GPU suite"). The same plans either
    way."""
    sizes = [raw.nnz for raw in raws]
    if len(raws) < 2 or not use_workers(sum(sizes)):
        return [_plan_layer(raw, opts, selection) for raw in raws]
    out: list = [None] * len(raws)
    with one_blas_thread():
        done = in_threads(sizes, lambda idx: [_plan_layer(raws[i], opts, selection) for i in idx])
    for idx, plans in done:
        for i, plan in zip(idx, plans, strict=True):
            out[i] = plan
    return out


def _expand(jobs) -> list[Parts]:
    """Jobs with every :class:`Block` unpacked into its matrices."""
    out = []
    for J in jobs:
        if isinstance(J, Block):
            out.extend(Parts(*unpack(J, i)) for i in range(J.count))
        else:
            out.append(J)
    return out


def _rows_parallel(layers, extract, opts, names, selection, weighted) -> list[dict]:
    """:func:`_rows` with the layers split by kept entries over the threads of
    :mod:`masktopo.analysis.spectral` (:func:`~masktopo.analysis.spectral.in_threads`): the
    workers' parts are extracted first and handed over, then this thread extracts and solves
    its own part while the workers run (the compiled kernels run without the GIL). A single
    layer's spectra are split over the threads instead (an LLM's MLP matrix fills a chunk
    alone: split by layer, one thread would idle), and started while it is still planned when
    it takes the dense route (:func:`_rows_streamed`). Results do not depend on the split:
    each matrix is computed by the same code either way."""
    sizes = np.array([_kept(m) for _, m, _ in layers], dtype=np.int64)
    if not opts.allow_empty and (sizes == 0).any():
        extract([layers[int(np.flatnonzero(sizes == 0)[0])]])  # raises the empty-layer error
    # the dense route's eigensolver (scipy.linalg) loaded here, before the BLAS limit
    big = any(layer_side(m, opts) >= DENSE_ROUTE_MIN_SIDE for _, m, _ in layers)
    if not use_workers(int(sizes.sum())):
        with one_blas_thread(scipy_linalg=big):
            return _rows(extract(layers), opts, names, selection, weighted)
    if len(layers) == 1:  # one layer (an LLM's MLP matrix): its spectra split over the threads
        raws = extract(layers)
        if _dense_layer(raws[0]):
            return _rows_streamed(raws[0], opts, names, selection)
        return _rows(raws, opts, names, selection, weighted,
                     solve=lambda jobs: solve_many(jobs, 2))  # fmt: skip
    with one_blas_thread(scipy_linalg=big):
        done = in_threads(
            sizes,
            lambda raws: _rows(raws, opts, names, selection, weighted),
            lambda idx: extract([layers[i] for i in idx]),
            _REMOTE_SHARE,
        )
    out: list[dict] = [{}] * len(layers)
    for idx, rows in done:
        for i, row in zip(idx, rows, strict=True):
            out[i] = row
    return out


def layer_metric_rows(
    layers: Iterable[tuple[str, torch.Tensor, torch.Tensor | None]],
    *,
    metrics: Iterable[str] | str | None = None,
    options: Options | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
) -> list[dict[str, Any]]:
    """Metric rows of many layers, all their spectra solved in one batched call.

    The batch entry point for callers that score many mask sets at once (PAGS scores a chunk of
    candidates by passing every layer of every candidate here): each layer is planned, every
    spectral job of every layer goes to one :func:`~masktopo.analysis.spectral.solve_many` call,
    and the rows are finished from its singular values.

    Parameters
    ----------
    layers : iterable of (name, mask, weight)
        Bool masks (``[out, in]`` or ``[out, in, *kernel]``) with weights of the same shape, or
        ``None`` for every weight (then only unweighted metrics). Names only label errors.
    metrics : iterable of str, optional
        Names from :data:`METRICS`; default all (weighted ones only with weights).
    options : Options, optional
        Conv reading, gate and variants (default :class:`Options()`).
    device : str or torch.device, optional
        Where the singular values are computed.
    route : {"auto", "batched"}
        :data:`masktopo.analysis.spectral.ROUTES`: ``"batched"`` takes the device route (the
        batched Gram solve CUDA uses) on the CPU too.

    Returns
    -------
    list of dict
        One row per layer, in order: metric name → value, plus ``"reason"``, exactly as
        :func:`layer_metrics` returns for each layer alone.
    """
    layers = list(layers)
    opts = Options() if options is None else options
    has_w = [w is not None for _, _, w in layers]
    if any(has_w) and not all(has_w):
        raise MaskValidationError("layer_metric_rows: give a weight for every layer or for none")
    weighted = bool(layers) and all(has_w)
    names = resolve_metrics(metrics, weighted=weighted)
    if not layers:
        return []
    return _run(layers, opts, names, _device(device), weighted, route=check_route(route))


def _options(options: Options | None, values: dict[str, Any]) -> Options:
    """The graph options: ``options``, or built from keyword values (not both)."""
    if options is not None:
        if values:
            raise MaskValidationError(f"give options= or {', '.join(values)}, not both")
        if not isinstance(options, Options):
            raise MaskValidationError(f"options must be an Options, not {type(options).__name__}")
        return options
    return grouped(values, Options)[0]


def layer_metrics(
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    metrics: Iterable[str] | str | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
    options: Options | None = None,
    **graph_options: Any,
) -> dict[str, Any]:
    """Graph metrics of one layer mask.

    Parameters
    ----------
    mask : torch.Tensor
        Bool or 0/1 mask, ``[out, in]`` or ``[out, in, *kernel]``.
    weight : torch.Tensor, optional
        Weights of the same shape; enables the weighted metrics (module docstring).
    metrics : iterable of str, optional
        Names from :data:`METRICS`; default all (weighted ones only with ``weight``).
    device : str or torch.device, optional
        Where the singular values are computed (``"cuda"``: the matrices that
        :func:`~masktopo.analysis.spectral.on_device` sends there are batched on the GPU, the
        others go to the CPU engine).
    route : {"auto", "batched"}
        ``"batched"``: the device route (batched Gram solve) on the CPU too
        (:data:`masktopo.analysis.spectral.ROUTES`).
    options : Options, optional
        The graph options (:class:`masktopo.options.Options`, where they are declared and
        checked): ``conv`` (``"unrolled"`` or ``"rolled"``, :mod:`masktopo.analysis.graph`),
        ``gate`` (``"n23"``/``"i23"``, the Ramanujan validity gate), ``imdb`` (the IMDB
        variant), ``narc`` (``"directed"``: ``e = 2|E|`` as the I23 code, or
        ``"undirected"``), ``allow_empty`` (an all-zero mask gives NaN metrics instead of an
        error).
    **graph_options
        The same options one by one (``conv="rolled"``), instead of ``options``.

    Returns
    -------
    dict
        Metric name → value (float, int, or bool/None for ``is_ramanujan``), plus ``"reason"``:
        why any metric is NaN ("" when none is).

    Raises
    ------
    MaskValidationError
        For a mask that is not 0/1, shapes that do not match, non-finite weights, an all-zero mask
        (unless ``allow_empty``), or a weighted metric asked for without weights.

    Examples
    --------
    >>> import torch
    >>> r = layer_metrics(torch.ones(4, 4, dtype=torch.bool))   # K_{4,4}
    >>> r["mu0"], r["mu_hat"], r["ramanujan_gap"], r["is_ramanujan"]
    (4.0, 0.0, 3.4641016151377544, True)
    """
    opts = _options(options, graph_options)
    mask = _as_mask(mask)
    if weight is not None:
        weight = check_weight("<mask>", layer_tensor("<mask>", weight, "weight"), mask)
    names = resolve_metrics(metrics, weighted=weight is not None)
    rows = _run([("<mask>", mask, weight)], opts, names, _device(device), weight is not None,
                route=check_route(route))  # fmt: skip
    return rows[0]


def analyze(
    maskset,
    *,
    weights: bool = True,
    metrics: Iterable[str] | str | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    route: str = "auto",
    options: Options | None = None,
    **graph_options: Any,
):
    """Graph metrics of every layer of a MaskSet, one row per layer.

    Parameters
    ----------
    maskset : MaskSet
        Masks, with weights if the weighted metrics are wanted.
    weights : bool
        Use the MaskSet's weights when it has them (``False``: structure-only metrics).
    metrics, device, route, options, **graph_options
        As in :func:`layer_metrics` (``conv``, ``gate``, ``imdb``, ``narc``, ``allow_empty``).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        The layer table, one row per layer in the MaskSet's order (no network row:
        :func:`aggregate` gives it). Columns ``layer`` (the name), ``layer_kind`` (``"linear"``
        or ``"conv"``), ``shape`` (the mask's shape, a list of ints such as ``[64, 3, 3, 3]``:
        ``[out, in, *kernel]``), the metrics (counts as ``Int64``, ``is_ramanujan`` as the
        nullable ``boolean``, the rest float64), ``reason``. ``df.attrs`` holds the options used.
    """
    import pandas as pd

    from ..masks import MaskSet

    if not isinstance(maskset, MaskSet):
        raise MaskValidationError(f"analyze expects a MaskSet, not {type(maskset).__name__}")
    if len(maskset) == 0:
        raise MaskValidationError("the MaskSet has no layers")
    opts = _options(options, graph_options)
    use_w = bool(weights) and maskset.has_weights
    names = resolve_metrics(metrics, weighted=use_w)
    ws = maskset.weights if use_w else None
    layers = [(n, maskset[n], None if ws is None else ws[n]) for n in maskset]
    rows = _run(layers, opts, names, _device(device), use_w, progress=progress,
                route=check_route(route))  # fmt: skip
    df = pd.DataFrame(rows, columns=[*names, "reason"])
    df.insert(0, "layer", list(maskset))
    df.insert(1, "layer_kind", [maskset.kind(n) for n in maskset])
    df.insert(2, "shape", [list(maskset.shape(n)) for n in maskset])
    for col in INT_METRICS:
        if col in df:
            df[col] = df[col].astype("Int64")
    if "is_ramanujan" in df:
        df["is_ramanujan"] = df["is_ramanujan"].astype("boolean")
    df.attrs.update(conv=opts.conv, gate=opts.gate, imdb=opts.imdb, narc=opts.narc,
                    weighted=use_w)  # fmt: skip
    return df


def aggregate(df, *, invalid: str = "skip") -> dict[str, Any]:
    """The network row of a layer table of :func:`analyze`.

    Rules (pags-spec §3.6):

    * counts (``n_out``, ``n_in``, ``numel``, ``n_edges``, active counts, ``n_components``,
      ``imdb_n_groups``) are summed; ``density`` is global, ``Σ n_edges / Σ numel``;
      ``deg_out_mean`` and ``deg_in_mean`` are ``Σ n_edges / Σ n_*_active``;
    * ``is_ramanujan`` (a layer's flag) gives ``ramanujan_fraction``, the fraction of layers that
      are Ramanujan (:data:`NETWORK_NAMES`): among layers where it is defined (``invalid="skip"``,
      I23's mean over defined layers) or among all layers, undefined counting as not Ramanujan
      (``invalid="zero"``);
    * every other metric is the mean over layers: over layers where it is defined (``"skip"``), or
      over all layers with undefined values counted as 0 (``"zero"``, the N23 code's rule).
      ``full_spectrum_norm`` is always defined, so its mean is N23's network score S.

    These are the registry's rules (:attr:`Metric.reduce`, :attr:`Metric.integer`): a registered
    metric is summed if it is a count, else averaged, unless it brings its own rule; a column
    that no metric owns is averaged. Label columns (:data:`LABEL_COLUMNS`: ``layer``,
    ``layer_kind``, ``shape``, ``reason``, ...) are not aggregated.

    Returns
    -------
    dict
        ``level = "network"``, ``layer = "(network)"`` (:data:`NETWORK`), ``n_layers``, one entry
        per metric column (``ramanujan_fraction`` in place of ``is_ramanujan``) and
        ``reason = ""``.
    """
    if invalid not in INVALID:
        raise UnknownNameError("invalid-value rule", invalid, INVALID)
    out: dict[str, Any] = {"level": "network", "layer": NETWORK, "n_layers": len(df)}
    for col in df.columns:
        if col in LABEL_COLUMNS:
            continue
        m = METRICS.get(col)
        if m is not None and m.reduce is not None:  # its own rule (density, degrees, flags)
            value = m.reduce(df, col, invalid)
        elif m is not None and m.integer:  # counts are summed
            value = int(df[col].sum())
        else:
            value = mean_over_layers(df, col, invalid)
        out[NETWORK_NAMES.get(col, col)] = value
    out["reason"] = ""
    return out
