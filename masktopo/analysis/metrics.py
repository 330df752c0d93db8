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

Validity gates (pags-spec §3.7): ``"n23"`` requires ``d̄_out ≥ 3`` and ``d̄_in > 1``, ``"i23"``
requires both ``≥ 3``; for IMDB groups the n23 gate swaps the sides. ``mu_hat`` needs at least 2
active nodes on each side. A metric that is undefined is NaN (``None`` for ``is_ramanujan``) and
the ``reason`` entry says why; it is never reported as 0.

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
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from ..errors import MaskValidationError, UnknownNameError
from ..masks import check_weight, known_positions
from ._engine import Parts, solve_top2
from ._kernels import Block, flat_kept, imdb_groups, strip_pattern, unpack
from .graph import _as_mask, check_conv_mode
from .spectral import solve_many, split_two, submit, use_workers

NaN = math.nan
GATES = ("n23", "i23")
IMDB_VARIANTS = ("n23", "i23")
NARC_EDGES = ("directed", "undirected")
INVALID = ("skip", "zero")


@dataclass(frozen=True)
class Metric:
    """A registered layer metric: its output name, the group computing it, whether it needs
    weights, and a one-line description."""

    name: str
    group: str
    weighted: bool
    description: str


def _m(name, group, description, weighted=False):
    return name, Metric(name, group, weighted, description)


METRICS: dict[str, Metric] = dict(
    [
        _m("n_out", "structure", "output units (biadjacency rows)"),
        _m("n_in", "structure", "input nodes (columns; C_in·k_h·k_w unrolled, C_in rolled)"),
        _m("numel", "structure", "entries of the mask"),
        _m("n_edges", "structure", "kept entries |E| (mask nnz)"),
        _m("density", "structure", "n_edges / numel"),
        _m("n_out_active", "structure", "outputs with at least one edge"),
        _m("n_in_active", "structure", "inputs with at least one edge"),
        _m("deg_out_mean", "structure", "mean fan-in of active outputs, |E| / n_out_active"),
        _m("deg_in_mean", "structure", "mean fan-out of active inputs, |E| / n_in_active"),
        _m("n_components", "structure", "connected components among active nodes"),
        _m("mu0", "spectral", "largest eigenvalue of the adjacency, σ1(B)"),
        _m("mu_hat", "spectral", "largest non-trivial eigenvalue, σ2(B)"),
        _m("spectral_gap", "spectral", "mu0 − mu_hat"),
        _m("ramanujan_bound", "ramanujan", "√(d̄_in − 1) + √(d̄_out − 1)"),
        _m("ramanujan_gap", "ramanujan", "Δr = ramanujan_bound − mu_hat (gated)"),
        _m("ramanujan_gap_norm", "ramanujan", "Δr / ramanujan_bound (gated)"),
        _m("ramanujan_gap_spectral", "ramanujan", "I23's Δs = 2√(mu0 − 1) − mu_hat (gated)"),
        _m("is_ramanujan", "ramanujan", "Δr ≥ 0 (gated)"),
        _m("weighted_mu0", "weighted", "σ1(|W ⊙ M|)", True),
        _m("weighted_mu_hat", "weighted", "σ2(|W ⊙ M|)", True),
        _m("weighted_spectral_gap", "weighted", "λ = weighted_mu0 − weighted_mu_hat", True),
        _m("imdb_ramanujan_gap", "imdb", "mean Δr over nested regular subgraphs"),
        _m("imdb_ramanujan_gap_norm", "imdb", "mean Δr/bound over nested regular subgraphs"),
        _m("imdb_n_groups", "imdb", "degree groups used by IMDB"),
        _m("imdb_weighted_gap", "imdb", "mean λ over nested regular subgraphs", True),
        _m("narc", "narc", "I23's normalised random coefficient (gated, i23 gate)"),
        _m("full_spectrum_norm", "full_spectrum", "‖(Δr, λ, IMDB_Δr, IMDB_λ)‖₂", True),
        _m("normalized_spectral_gap", "expansion", "1 − σ2(D_out^-½ B D_in^-½)"),
        _m("conductance_lower", "expansion", "Cheeger lower bound on conductance, gap/2"),
        _m("conductance_upper", "expansion", "Cheeger upper bound on conductance, √(2·gap)"),
    ]
)

# Groups a group's values depend on (computed first, even when not asked for).
_DEPENDS = {
    "ramanujan": {"structure", "spectral"},
    "narc": {"structure", "spectral"},
    "imdb": {"structure"},
    "full_spectrum": {"structure", "spectral", "ramanujan", "weighted", "imdb"},
    "spectral": {"structure"},
    "weighted": {"structure"},
    "expansion": {"structure"},
}
INT_METRICS = ("n_out", "n_in", "numel", "n_edges", "n_out_active", "n_in_active",
               "n_components", "imdb_n_groups")  # fmt: skip


def metric_names(weighted: bool = True) -> list[str]:
    """Registered metric names in table order; without the weighted ones if ``weighted=False``."""
    return [n for n, m in METRICS.items() if weighted or not m.weighted]


def resolve_metrics(metrics: Iterable[str] | str | None, weighted: bool) -> list[str]:
    """Validate a metric selection; None means every metric (weighted ones only with weights).

    Raises :class:`UnknownNameError` for an unknown name and :class:`MaskValidationError` when a
    weighted metric is asked for without weights.
    """
    if metrics is None:
        return metric_names(weighted)
    if isinstance(metrics, str):
        metrics = [metrics]
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


def _groups_for(names: Iterable[str]) -> set[str]:
    groups = {METRICS[n].group for n in names}
    todo = list(groups)
    while todo:
        for dep in _DEPENDS.get(todo.pop(), ()):
            if dep not in groups:
                groups.add(dep)
                todo.append(dep)
    return groups


@dataclass(frozen=True)
class Options:
    """Validated analysis options (the strings are parsed here and nowhere else)."""

    conv: str = "unrolled"
    gate: str = "n23"
    imdb: str = "n23"
    narc: str = "directed"
    allow_empty: bool = False

    def __post_init__(self):
        check_conv_mode(self.conv)
        for value, known, what in (
            (self.gate, GATES, "gate"),
            (self.imdb, IMDB_VARIANTS, "IMDB variant"),
            (self.narc, NARC_EDGES, "NaRC edge convention"),
        ):
            if value not in known:
                raise UnknownNameError(what, value, known)


# --------------------------------------------------------------------------------------------
# From a mask to CSR (CPU, vectorized)
# --------------------------------------------------------------------------------------------


@dataclass
class _Pattern:
    """Stripped biadjacency as CSR pieces, shared by the binary, weighted and normalized data."""

    indptr: np.ndarray
    indices: np.ndarray
    rows: np.ndarray  # row index of every nonzero (stripped numbering)
    data: np.ndarray  # binary (1) or multiplicities, float64
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
        raise MaskValidationError(f"layer {name!r} has an all-zero mask (no edges)")
    w = None
    if weight is not None:  # |w| at the kept entries only, gathered where the weight lives
        wt = weight.detach()
        if wt.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            wt = wt.float()  # e.g. float8: no indexing kernels
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
    rows, indices, indptr, n_o, n_i = strip_pattern(raw.pos, raw.n_out, raw.n_in)
    data = np.ones(raw.nnz) if raw.data is None else raw.data
    wdata = None if raw.wdata is None else raw.wdata.astype(np.float64, copy=False)
    return _Pattern(indptr, indices, rows, data, wdata, (n_o, n_i))


# --------------------------------------------------------------------------------------------
# One layer: plan (structure + spectral jobs), then finish (metrics from singular values)
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    values: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    jobs: list = field(default_factory=list)  # Parts and Blocks
    n_mat: int = 0  # matrices in jobs (a Block holds many)
    slots: dict[Any, int] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    imdb_groups: list[tuple] = field(default_factory=list)

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

    def why(self, text: str) -> None:
        if text not in self.reasons:
            self.reasons.append(text)


def _gate_ok(gate: str, d_left: float, d_right: float) -> bool:
    """Validity gate; ``d_left`` is the side the N23 code calls left (pags-spec §3.7)."""
    if gate == "n23":
        return d_left >= 3 and d_right > 1
    return d_left >= 3 and d_right >= 3


def _plan_layer(raw: _Raw, opts: Options, groups: set[str]) -> _Plan:
    plan = _Plan(groups=groups)
    v = plan.values
    numel, n_out, n_in = raw.numel, raw.n_out, raw.n_in
    pat = _layer_pattern(raw)
    n_edges = round(float(pat.data.sum()))
    n_o, n_i = pat.shape
    v.update(n_out=n_out, n_in=n_in, numel=numel, n_edges=n_edges, density=n_edges / numel,
             n_out_active=n_o, n_in_active=n_i)  # fmt: skip
    if n_edges == 0:  # allowed: _extract raised otherwise
        v.update(deg_out_mean=NaN, deg_in_mean=NaN, n_components=0)
        plan.why("layer has no edges")
        return plan
    v["deg_out_mean"] = d_out = n_edges / n_o
    v["deg_in_mean"] = d_in = n_edges / n_i
    if "components" in groups:  # weakly connected components of the out→in edges, O(|E|)
        N = n_o + n_i
        adj = sp.csr_matrix((np.ones(pat.rows.size), (pat.rows, pat.indices + n_o)), shape=(N, N))
        v["n_components"] = int(connected_components(adj, directed=True, connection="weak")[0])

    enough = min(n_o, n_i) >= 2
    if not enough:
        plan.why(f"mu_hat undefined: {n_o} active output(s), {n_i} active input(s) (need 2 each)")
    if "spectral" in groups:
        plan.add_job("bin", pat.parts(pat.data))
    if "weighted" in groups and pat.wdata is not None:
        plan.add_job("w", pat.parts(pat.wdata))
    if "expansion" in groups and enough:
        rs = np.bincount(pat.rows, weights=pat.data, minlength=n_o)
        cs = np.bincount(pat.indices, weights=pat.data, minlength=n_i)
        ndata = pat.data / np.sqrt(rs[pat.rows] * cs[pat.indices])
        plan.add_job("norm", pat.parts(ndata))
    if "ramanujan" in groups or "narc" in groups:
        plan.values["_gate_ok"] = _gate_ok(opts.gate, d_out, d_in)
        plan.values["_i23_ok"] = _gate_ok("i23", d_out, d_in)
    if "imdb" in groups:
        _plan_imdb(plan, pat, opts, weighted=pat.wdata is not None)
    return plan


def _plan_imdb(plan: _Plan, pat: _Pattern, opts: Options, weighted: bool) -> None:
    n_rows, n_cols = pat.shape
    min_group = 2 if opts.imdb == "n23" else 3
    # Inputs are "left" for IMDB subgraphs: d_in = d, d_out = d·size/n_r.
    d, size, n_r, indptr, indices, eid, ptr_off, nnz_off = imdb_groups(
        pat.indptr, pat.indices, pat.data, n_rows, n_cols, min_group, opts.imdb == "i23"
    )
    if d.size == 0:
        return
    shapes = np.stack([size, n_r], axis=1)
    for dg, sz, nr in zip(d.tolist(), size.tolist(), n_r.tolist(), strict=True):
        plan.imdb_groups.append((("imdb", dg), sz, nr, dg, dg * sz / nr))
    # Each group's transpose (inputs × active outputs): σ do not change under transposition.
    plan.add_block([("imdb", dg) for dg in d.tolist()],
                   Block(pat.data[eid], indices, indptr, ptr_off, nnz_off, shapes))  # fmt: skip
    if weighted:
        plan.add_block([("imdb_w", dg) for dg in d.tolist()],
                       Block(pat.wdata[eid], indices, indptr, ptr_off, nnz_off, shapes))  # fmt: skip


def _finish(plan: _Plan, sv: dict[Any, np.ndarray], opts: Options, weighted: bool) -> dict:
    v = plan.values
    groups = plan.groups
    out: dict[str, Any] = dict(v)
    empty = v["n_edges"] == 0
    enough = not empty and min(v["n_out_active"], v["n_in_active"]) >= 2
    if "spectral" in groups:
        mu0 = float(sv["bin"][0]) if "bin" in sv else NaN
        mu_hat = float(sv["bin"][1]) if enough else NaN
        out.update(mu0=mu0, mu_hat=mu_hat, spectral_gap=mu0 - mu_hat)
    if "ramanujan" in groups:
        d_in, d_out = v.get("deg_in_mean", NaN), v.get("deg_out_mean", NaN)
        bound = math.sqrt(d_in - 1) + math.sqrt(d_out - 1) if not empty else NaN
        out["ramanujan_bound"] = bound
        ok = bool(v.get("_gate_ok", False)) and enough
        if not empty and enough and not ok:
            side = f"mean fan-in {d_out:.3g}, mean fan-out {d_in:.3g}"
            rule = "fan-in >= 3 and fan-out > 1" if opts.gate == "n23" else "both >= 3"
            plan.why(f"ramanujan gate ({opts.gate}) fails: {side}; needs {rule}")
        if ok:
            gap = bound - out["mu_hat"]
            out.update(ramanujan_gap=gap, ramanujan_gap_norm=gap / bound, is_ramanujan=gap >= 0,
                       ramanujan_gap_spectral=2 * math.sqrt(max(out["mu0"] - 1, 0.0))
                       - out["mu_hat"])  # fmt: skip
        else:
            out.update(ramanujan_gap=NaN, ramanujan_gap_norm=NaN, is_ramanujan=None,
                       ramanujan_gap_spectral=NaN)  # fmt: skip
    if "weighted" in groups and weighted:
        w0 = float(sv["w"][0]) if "w" in sv else NaN
        wh = float(sv["w"][1]) if enough else NaN
        out.update(weighted_mu0=w0, weighted_mu_hat=wh, weighted_spectral_gap=w0 - wh)
    if "imdb" in groups:
        _finish_imdb(plan, sv, out, opts, weighted, empty)
    if "narc" in groups:
        if enough and v.get("_i23_ok", False):
            n_l, n_r = v["n_in_active"], v["n_out_active"]
            e = (2 if opts.narc == "directed" else 1) * v["n_edges"]
            d_l = v["n_edges"] / n_l
            root = math.sqrt(n_l * n_r)
            out["narc"] = ((out["mu_hat"] ** 2 / 4 + 1) * root
                           - abs(e - d_l / v["n_out"] * n_l * n_r)) / (v["n_in"] * v["n_out"])  # fmt: skip
        else:
            out["narc"] = NaN
            if enough:
                plan.why("narc undefined: i23 gate fails (mean degrees must both be >= 3)")
    if "full_spectrum" in groups and weighted:
        ok = out.get("is_ramanujan") is not None
        coord = [
            out["ramanujan_gap"] if ok else 0.0,
            out["weighted_spectral_gap"] if ok else 0.0,
            out["imdb_ramanujan_gap"],
            out["imdb_weighted_gap"],
        ]
        out["full_spectrum_norm"] = math.hypot(*(0.0 if math.isnan(c) else c for c in coord))
    if "expansion" in groups:
        if enough:
            gap = 1.0 - float(sv["norm"][1])
            gap = min(max(gap, 0.0), 1.0)  # σ₂ of the normalized matrix lies in [0, 1]
            out.update(normalized_spectral_gap=gap, conductance_lower=gap / 2,
                       conductance_upper=math.sqrt(2 * gap))  # fmt: skip
        else:
            out.update(normalized_spectral_gap=NaN, conductance_lower=NaN, conductance_upper=NaN)
    for key in [k for k in out if k.startswith("_")]:
        del out[key]
    return out


def _finish_imdb(plan, sv, out, opts, weighted, empty) -> None:
    drs, drns, lams = [], [], []
    for key, n_s, n_r, d_in, d_out in plan.imdb_groups:
        bound = math.sqrt(d_in - 1) + math.sqrt(d_out - 1)
        dr = bound - float(sv[key][1])
        lam = None
        if weighted:
            s = sv[("imdb_w", key[1])]
            lam = float(s[0] - s[1])
        c = max(n_s, n_r) / (n_s + n_r - 1) if opts.imdb == "n23" else 1.0
        drs.append(c * dr)
        drns.append(dr / bound)
        if lam is not None:
            lams.append(c * lam)
    out["imdb_n_groups"] = len(drs)
    if drs:
        out["imdb_ramanujan_gap"] = float(np.mean(drs))
        out["imdb_ramanujan_gap_norm"] = float(np.mean(drns))
        if weighted:
            out["imdb_weighted_gap"] = float(np.mean(lams))
    else:
        out["imdb_ramanujan_gap"] = out["imdb_ramanujan_gap_norm"] = NaN
        if weighted:
            out["imdb_weighted_gap"] = NaN
        if not empty:
            plan.why(f"imdb undefined: no input-degree group passes the {opts.imdb} rules")


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MaskValidationError("device 'cuda' was asked for, but CUDA is not available here")
    return device


def _run(layers, opts: Options, names: list[str], device, weighted: bool, progress=False):
    groups = _groups_for(names)
    if "n_components" in names:
        groups.add("components")  # a graph search per layer: only when asked for
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
        if device.type != "cpu":
            return _rows(extract(layers), opts, names, groups, weighted, device)
        return _rows_parallel(layers, extract, opts, names, groups, weighted)
    finally:
        if bar is not None:
            bar.close()


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


def _rows(raws, opts, names, groups, weighted, device=None) -> list[dict]:
    """Plan every layer, solve all their spectra in one call, finish the rows."""
    plans, jobs, offsets = [], [], []
    n_mat = 0
    for raw in raws:
        plan = _plan_layer(raw, opts, groups)
        offsets.append(n_mat)
        n_mat += plan.n_mat
        jobs.extend(plan.jobs)
        plans.append(plan)
    if device is None:  # in this process (a worker does not start workers of its own)
        svals = solve_top2(jobs) if jobs else np.zeros((0, 2))
    else:  # one matrix per job for the device path
        svals = solve_many(_expand(jobs), 2, device=device)
    results = []
    for plan, off in zip(plans, offsets, strict=True):
        sv = {key: svals[off + i] for key, i in plan.slots.items()}
        full = _finish(plan, sv, opts, weighted)
        row = {n: full.get(n, NaN) for n in names}
        if "is_ramanujan" in row and isinstance(row["is_ramanujan"], float):
            row["is_ramanujan"] = None
        row["reason"] = "; ".join(plan.reasons)
        results.append(row)
    return results


def _expand(jobs) -> list[Parts]:
    """Jobs with every :class:`Block` unpacked into its matrices."""
    out = []
    for J in jobs:
        if isinstance(J, Block):
            out.extend(Parts(*unpack(J, i)) for i in range(J.count))
        else:
            out.append(J)
    return out


def _rows_parallel(layers, extract, opts, names, groups, weighted) -> list[dict]:
    """:func:`_rows` with the layers split in two parts by kept entries, one in the worker
    thread of :mod:`masktopo.analysis.spectral`: the worker's part is extracted first and
    handed over, then this thread extracts and solves its own part while the worker runs (the
    compiled kernels run without the GIL). Results do not depend on the split: each layer is
    computed by the same code either way."""
    sizes = np.array([_kept(m) for _, m, _ in layers], dtype=np.int64)
    if not opts.allow_empty and (sizes == 0).any():
        extract([layers[int(np.flatnonzero(sizes == 0)[0])]])  # raises the empty-layer error
    if not use_workers(int(sizes.sum())):
        with threadpool_limits(1):
            return _rows(extract(layers), opts, names, groups, weighted)
    parts = split_two(sizes, _REMOTE_SHARE)
    with threadpool_limits(1):
        remote = extract([layers[i] for i in parts[1]])
        future = submit(_rows, remote, opts, names, groups, weighted)
        local = _rows(extract([layers[i] for i in parts[0]]), opts, names, groups, weighted)
        far = future.result()
    out: list[dict] = [{}] * len(layers)
    for i, row in zip(parts[0], local, strict=True):
        out[i] = row
    for i, row in zip(parts[1], far, strict=True):
        out[i] = row
    return out


def layer_metric_rows(
    layers: Iterable[tuple[str, torch.Tensor, torch.Tensor | None]],
    *,
    metrics: Iterable[str] | str | None = None,
    options: Options | None = None,
    device: str | torch.device | None = None,
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
    return _run(layers, opts, names, _device(device), weighted)


def layer_metrics(
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    conv: str = "unrolled",
    *,
    metrics: Iterable[str] | str | None = None,
    gate: str = "n23",
    imdb: str = "n23",
    narc: str = "directed",
    device: str | torch.device | None = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Graph metrics of one layer mask.

    Parameters
    ----------
    mask : torch.Tensor
        Bool or 0/1 mask, ``[out, in]`` or ``[out, in, *kernel]``.
    weight : torch.Tensor, optional
        Weights of the same shape; enables the weighted metrics (module docstring).
    conv : {"unrolled", "rolled"}
        Conv reading (:mod:`masktopo.analysis.graph`).
    metrics : iterable of str, optional
        Names from :data:`METRICS`; default all (weighted ones only with ``weight``).
    gate : {"n23", "i23"}
        Validity gate of the Ramanujan metrics (module docstring).
    imdb : {"n23", "i23"}
        IMDB variant.
    narc : {"directed", "undirected"}
        Edge count convention of NaRC (``e = 2|E|`` as in the I23 code, or ``|E|``).
    device : str or torch.device, optional
        Where the singular values are computed (``"cuda"`` batches them on the GPU).
    allow_empty : bool
        Report an all-zero mask as NaN metrics instead of raising.

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
    opts = Options(conv, gate, imdb, narc, allow_empty)
    mask = _as_mask(mask)
    if weight is not None:
        weight = check_weight("<mask>", torch.as_tensor(weight), mask)
    names = resolve_metrics(metrics, weighted=weight is not None)
    rows = _run([("<mask>", mask, weight)], opts, names, _device(device), weight is not None)
    return rows[0]


def analyze(
    maskset,
    *,
    conv: str = "unrolled",
    weights: bool = True,
    metrics: Iterable[str] | str | None = None,
    gate: str = "n23",
    imdb: str = "n23",
    narc: str = "directed",
    device: str | torch.device | None = None,
    progress: bool = False,
    allow_empty: bool = False,
):
    """Graph metrics of every layer of a MaskSet, one row per layer.

    Parameters
    ----------
    maskset : MaskSet
        Masks, with weights if the weighted metrics are wanted.
    weights : bool
        Use the MaskSet's weights when it has them (``False``: structure-only metrics).
    conv, metrics, gate, imdb, narc, device, allow_empty
        As in :func:`layer_metrics`.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``kind``, ``shape`` (e.g. ``"64x3x3x3"``), the metrics, ``reason``.
        ``df.attrs`` holds the options used. :func:`aggregate` gives the network-level row.
    """
    import pandas as pd

    from ..masks import MaskSet

    if not isinstance(maskset, MaskSet):
        raise MaskValidationError(f"analyze expects a MaskSet, not {type(maskset).__name__}")
    if len(maskset) == 0:
        raise MaskValidationError("the MaskSet has no layers")
    opts = Options(conv, gate, imdb, narc, allow_empty)
    use_w = bool(weights) and maskset.has_weights
    names = resolve_metrics(metrics, weighted=use_w)
    ws = maskset.weights if use_w else None
    layers = [(n, maskset[n], None if ws is None else ws[n]) for n in maskset]
    rows = _run(layers, opts, names, _device(device), use_w, progress=progress)
    df = pd.DataFrame(rows, columns=[*names, "reason"])
    df.insert(0, "layer", list(maskset))
    df.insert(1, "kind", [maskset.kind(n) for n in maskset])
    df.insert(2, "shape", ["x".join(str(s) for s in maskset.shape(n)) for n in maskset])
    for col in INT_METRICS:
        if col in df:
            df[col] = df[col].astype("Int64")
    if "is_ramanujan" in df:
        df["is_ramanujan"] = df["is_ramanujan"].astype("boolean")
    df.attrs.update(conv=conv, gate=gate, imdb=imdb, narc=narc, weighted=use_w)
    return df


def aggregate(df, *, invalid: str = "skip") -> dict[str, Any]:
    """Network-level values from a per-layer table of :func:`analyze`.

    Rules (pags-spec §3.6):

    * counts (``n_out``, ``n_in``, ``numel``, ``n_edges``, active counts, ``n_components``,
      ``imdb_n_groups``) are summed; ``density`` is global, ``Σ n_edges / Σ numel``;
      ``deg_out_mean`` and ``deg_in_mean`` are ``Σ n_edges / Σ n_*_active``;
    * ``is_ramanujan`` becomes the fraction of layers that are Ramanujan: among layers where it is
      defined (``invalid="skip"``, I23's mean over defined layers) or among all layers, undefined
      counting as not Ramanujan (``invalid="zero"``);
    * every other metric is the mean over layers: over layers where it is defined (``"skip"``), or
      over all layers with undefined values counted as 0 (``"zero"``, the N23 code's rule).
      ``full_spectrum_norm`` is always defined, so its mean is N23's network score S.

    Returns a dict with ``layer = "(network)"``, ``n_layers`` and one entry per metric column.
    """
    if invalid not in INVALID:
        raise UnknownNameError("invalid-value rule", invalid, INVALID)
    out: dict[str, Any] = {"layer": "(network)", "n_layers": len(df)}
    for col in df.columns:
        if col in ("layer", "kind", "shape", "reason", "file", "event"):
            continue
        s = df[col]
        if col in INT_METRICS:  # counts are summed
            out[col] = int(s.sum())
        elif col == "density" and "numel" in df and "n_edges" in df:
            out[col] = float(df["n_edges"].sum() / df["numel"].sum())
        elif col == "density":
            out[col] = float(s.mean())
        elif col in ("deg_out_mean", "deg_in_mean") and "n_edges" in df:
            act = "n_out_active" if col == "deg_out_mean" else "n_in_active"
            out[col] = float(df["n_edges"].sum() / df[act].sum()) if act in df else NaN
        elif col == "is_ramanujan":
            vals = s.astype("boolean")
            if invalid == "skip":
                out[col] = float(vals.dropna().mean()) if vals.notna().any() else NaN
            else:
                out[col] = float(vals.fillna(False).mean())
        else:
            vals = s.astype(float)
            if invalid == "zero":
                vals = vals.fillna(0.0)
            out[col] = float(vals.mean()) if vals.notna().any() else NaN
    out["reason"] = ""
    return out
