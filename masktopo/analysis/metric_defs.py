r"""The built-in layer metrics: one function per metric, registered in table order.

Each function is the metric's finishing formula: it gets a
:class:`~masktopo.analysis._registry.MetricContext` (``c``) holding the values of the metrics
and quantities it declares in ``depends``, the layer's sizes ``c.layer`` and the options
``c.options``, and returns the value for one layer (NaN when undefined, after ``c.why(reason)``).
Notation, gates and references ([I23], [N23], [MSS15], [Chung97]) are those of
:mod:`masktopo.analysis.metrics`; the registration API is in :mod:`masktopo.analysis._registry`.
"""

from __future__ import annotations

import math

import numpy as np

from ._registry import NaN, _seal_builtins, mean_over_layers
from ._registry import metric as _metric

# --------------------------------------------------------------------------------------------
# Shared pieces of the formulas
# --------------------------------------------------------------------------------------------


def _gate_ok(gate: str, d_left: float, d_right: float) -> bool:
    """Validity gate; ``d_left`` is the side the N23 code calls left (pags-spec §3.7)."""
    if gate == "n23":
        return d_left >= 3 and d_right > 1
    return d_left >= 3 and d_right >= 3


def _ramanujan_gate(c) -> bool:
    """The layer passes ``c.options.gate`` with σ2 defined; records why not."""
    if not c.two_per_side():
        return False
    d_out, d_in, gate = c["deg_out_mean"], c["deg_in_mean"], c.options.gate
    if _gate_ok(gate, d_out, d_in):
        return True
    side = f"mean fan-in {d_out:.3g}, mean fan-out {d_in:.3g}"
    rule = "fan-in >= 3 and fan-out > 1" if gate == "n23" else "both >= 3"
    c.why(f"ramanujan gate ({gate}) fails: {side}; needs {rule}")
    return False


def _imdb_used(c, groups) -> bool:
    """Whether some IMDB group survives; records why not."""
    if groups:
        return True
    if c.has_edges():
        c.why(f"imdb undefined: no input-degree group passes the {c.options.imdb} rules")
    return False


def _imdb_bound(g) -> float:
    return math.sqrt(g.d_in - 1) + math.sqrt(g.d_out - 1)


def _cheeger(c, g) -> float:
    """IMDB group weight: ``c_d = max(|S_d|, |R_d|)/(|S_d| + |R_d| − 1)`` (n23), else 1."""
    if c.options.imdb != "n23":
        return 1.0
    return max(g.n_inputs, g.n_outputs) / (g.n_inputs + g.n_outputs - 1)


def _sum_ratio(num: str, den: str):
    """Network rule ``Σ num / Σ den`` (a reducer of :func:`register_metric`)."""

    def reduce(df, col, invalid):
        if num not in df:
            return mean_over_layers(df, col, invalid)
        if den not in df:
            return NaN
        total = df[den].sum()
        return float(df[num].sum() / total) if total else NaN  # 0/0: every layer empty

    return reduce


def _density_rule(df, col, invalid):
    if "numel" in df and "n_edges" in df:
        return float(df["n_edges"].sum() / df["numel"].sum())
    return float(df[col].mean())


def _fraction_rule(df, col, invalid):
    """Fraction of layers where the flag is true: among layers where it is defined (``skip``)
    or among all layers, undefined counting as false (``zero``)."""
    vals = df[col].astype("boolean")
    if invalid == "skip":
        return float(vals.dropna().mean()) if vals.notna().any() else NaN
    return float(vals.fillna(False).mean())


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


@_metric(group="structure", description="output units (biadjacency rows)", integer=True)
def n_out(c):
    """Output units, the number of rows of ``B`` (isolated ones included).

    Returns
    -------
    int
    """
    return c.layer.n_out


@_metric(group="structure", integer=True,
         description="input nodes (columns; C_in·k_h·k_w unrolled, C_in rolled)")  # fmt: skip
def n_in(c):
    """Input nodes, the number of columns of ``B``: ``C_in·k_h·k_w`` unrolled, ``C_in`` rolled.

    Returns
    -------
    int
    """
    return c.layer.n_in


@_metric(group="structure", description="entries of the mask", integer=True)
def numel(c):
    """Entries of the mask tensor.

    Returns
    -------
    int
    """
    return c.layer.numel


@_metric(group="structure", description="kept entries |E| (mask nnz)", integer=True)
def n_edges(c):
    """Kept entries ``|E|`` (the mask's nnz; with multiplicity when a conv is rolled).

    Returns
    -------
    int
    """
    return c.layer.n_edges


@_metric(group="structure", description="n_edges / numel", depends=("n_edges", "numel"),
         reduce=_density_rule)  # fmt: skip
def density(c):
    """Share of kept entries, ``n_edges / numel``; network value ``Σ n_edges / Σ numel``.

    Returns
    -------
    float
    """
    return c["n_edges"] / c["numel"]


@_metric(group="structure", description="outputs with at least one edge", integer=True)
def n_out_active(c):
    """Active outputs ``n_out'``: rows of ``B`` with at least one edge.

    Returns
    -------
    int
    """
    return c.layer.n_out_active


@_metric(group="structure", description="inputs with at least one edge", integer=True)
def n_in_active(c):
    """Active inputs ``n_in'``: columns of ``B`` with at least one edge.

    Returns
    -------
    int
    """
    return c.layer.n_in_active


@_metric(group="structure", depends=("n_edges", "n_out_active"), defined="the layer has edges",
         description="mean fan-in of active outputs, |E| / n_out_active",
         reduce=_sum_ratio("n_edges", "n_out_active"))  # fmt: skip
def deg_out_mean(c):
    """Mean fan-in of the active outputs, ``d̄_out = |E| / n_out'``; network value
    ``Σ n_edges / Σ n_out_active``.

    Returns
    -------
    float
        NaN for a layer without edges.
    """
    return c["n_edges"] / c["n_out_active"] if c.has_edges() else NaN


@_metric(group="structure", depends=("n_edges", "n_in_active"), defined="the layer has edges",
         description="mean fan-out of active inputs, |E| / n_in_active",
         reduce=_sum_ratio("n_edges", "n_in_active"))  # fmt: skip
def deg_in_mean(c):
    """Mean fan-out of the active inputs, ``d̄_in = |E| / n_in'``; network value
    ``Σ n_edges / Σ n_in_active``.

    Returns
    -------
    float
        NaN for a layer without edges.
    """
    return c["n_edges"] / c["n_in_active"] if c.has_edges() else NaN


@_metric(group="structure", description="connected components among active nodes",
         depends=("components",), integer=True)  # fmt: skip
def n_components(c):
    """Connected components of the bipartite graph among its active nodes (0 without edges).

    Returns
    -------
    int
    """
    return c.quantity("components")


# --------------------------------------------------------------------------------------------
# Spectral ([I23], [N23])
# --------------------------------------------------------------------------------------------


@_metric(group="spectral", description="largest eigenvalue of the adjacency, σ1(B)",
         depends=("sv_binary",), defined="the layer has edges")  # fmt: skip
def mu0(c):
    """Perron eigenvalue of the bipartite adjacency, ``mu0 = σ₁(B)`` ([I23], [N23]).

    Returns
    -------
    float
        NaN for a layer without edges.
    """
    return float(c.quantity("sv_binary")[0]) if c.has_edges() else NaN


@_metric(group="spectral", description="largest non-trivial eigenvalue, σ2(B)",
         depends=("sv_binary",), defined="≥ 2 active nodes on each side")  # fmt: skip
def mu_hat(c):
    """Largest non-trivial eigenvalue of the bipartite adjacency, ``mu_hat = σ₂(B)`` ([I23],
    [N23]): the third largest ``|eig(A)|``, since ``A`` has eigenvalues ``±σᵢ(B)``.

    Returns
    -------
    float
        NaN unless both sides have at least 2 active nodes.
    """
    return float(c.quantity("sv_binary")[1]) if c.two_per_side() else NaN


@_metric(group="spectral", description="mu0 − mu_hat", depends=("mu0", "mu_hat"),
         defined="as `mu_hat`")  # fmt: skip
def spectral_gap(c):
    """Spectral gap ``mu0 − mu_hat`` ([I23], [N23]).

    Returns
    -------
    float
    """
    return c["mu0"] - c["mu_hat"]


# --------------------------------------------------------------------------------------------
# Ramanujan ([MSS15] bound with average degrees, as both papers' code does)
# --------------------------------------------------------------------------------------------


@_metric(group="ramanujan", description="√(d̄_in − 1) + √(d̄_out − 1)",
         depends=("deg_in_mean", "deg_out_mean"), defined="the layer has edges",
         note="[MSS15] biregular bound with average degrees, as both papers' code")  # fmt: skip
def ramanujan_bound(c):
    """Ramanujan bound with average degrees, ``√(d̄_in − 1) + √(d̄_out − 1)`` ([MSS15]).

    Returns
    -------
    float
        NaN for a layer without edges; reported even when the gate fails.
    """
    if not c.has_edges():
        return NaN
    return math.sqrt(c["deg_in_mean"] - 1) + math.sqrt(c["deg_out_mean"] - 1)


@_metric(group="ramanujan", description="Δr = ramanujan_bound − mu_hat (gated)",
         depends=("ramanujan_bound", "mu_hat", "deg_out_mean", "deg_in_mean"), defined="gate",
         note="> 0 means the layer meets the bound")  # fmt: skip
def ramanujan_gap(c):
    """Ramanujan gap ``Δr = ramanujan_bound − mu_hat`` ([I23], [N23]); > 0 means the layer
    meets the bound.

    Returns
    -------
    float
        NaN when the layer fails the gate (``c.options.gate``) or σ2 is undefined.
    """
    return c["ramanujan_bound"] - c["mu_hat"] if _ramanujan_gate(c) else NaN


@_metric(group="ramanujan", description="Δr / ramanujan_bound (gated)", defined="gate",
         depends=("ramanujan_gap", "ramanujan_bound"),
         note="I23's plotted \"Δr\"")  # fmt: skip
def ramanujan_gap_norm(c):
    """Normalized Ramanujan gap ``Δr / ramanujan_bound`` (the "Δr" plotted by [I23]).

    Returns
    -------
    float
        NaN where ``ramanujan_gap`` is.
    """
    gap = c["ramanujan_gap"]
    return NaN if math.isnan(gap) else gap / c["ramanujan_bound"]


@_metric(group="ramanujan", description="I23's Δs = 2√(mu0 − 1) − mu_hat (gated)",
         depends=("ramanujan_gap", "mu0", "mu_hat"), defined="gate")  # fmt: skip
def ramanujan_gap_spectral(c):
    """[I23]'s spectral gap to the Ramanujan bound of ``mu0``, ``Δs = 2√(mu0 − 1) − mu_hat``.

    Returns
    -------
    float
        NaN where ``ramanujan_gap`` is.
    """
    if math.isnan(c["ramanujan_gap"]):
        return NaN
    return 2 * math.sqrt(max(c["mu0"] - 1, 0.0)) - c["mu_hat"]


@_metric(group="ramanujan", description="Δr ≥ 0 (gated)", depends=("ramanujan_gap",),
         defined="gate", note="`<NA>` when undefined", reduce=_fraction_rule)  # fmt: skip
def is_ramanujan(c):
    """Whether the layer meets the Ramanujan bound, ``Δr ≥ 0`` ([I23]); network value: the
    fraction of Ramanujan layers (``invalid`` rule of :func:`aggregate`).

    Returns
    -------
    bool or None
        None (not NaN) where ``ramanujan_gap`` is undefined.
    """
    gap = c["ramanujan_gap"]
    return None if math.isnan(gap) else gap >= 0


# --------------------------------------------------------------------------------------------
# Weighted ([N23]), on |W ⊙ M|
# --------------------------------------------------------------------------------------------


@_metric(group="weighted", description="σ1(|W ⊙ M|)", weighted=True, depends=("sv_weighted",),
         defined="the layer has edges")  # fmt: skip
def weighted_mu0(c):
    """Top singular value of the weighted biadjacency, ``σ₁(|W ⊙ M|)`` ([N23]).

    Returns
    -------
    float
        NaN for a layer without edges.
    """
    return float(c.quantity("sv_weighted")[0]) if c.has_edges() else NaN


@_metric(group="weighted", description="σ2(|W ⊙ M|)", weighted=True, depends=("sv_weighted",),
         defined="≥ 2 active nodes on each side")  # fmt: skip
def weighted_mu_hat(c):
    """Second singular value of the weighted biadjacency, ``σ₂(|W ⊙ M|)`` ([N23]).

    Returns
    -------
    float
        NaN unless both sides have at least 2 active nodes.
    """
    return float(c.quantity("sv_weighted")[1]) if c.two_per_side() else NaN


@_metric(group="weighted", description="λ = weighted_mu0 − weighted_mu_hat", weighted=True,
         depends=("weighted_mu0", "weighted_mu_hat"), defined="as `weighted_mu_hat`",
         note="[N23]")  # fmt: skip
def weighted_spectral_gap(c):
    """Weighted spectral gap ``λ = weighted_mu0 − weighted_mu_hat`` ([N23]).

    Returns
    -------
    float
    """
    return c["weighted_mu0"] - c["weighted_mu_hat"]


# --------------------------------------------------------------------------------------------
# IMDB, nested regular subgraphs ([I23], [N23]; pags-spec §3.3)
# --------------------------------------------------------------------------------------------


@_metric(group="imdb", description="mean Δr over nested regular subgraphs",
         depends=("imdb_groups",), defined="a group survives",
         note="`c_d`-weighted for imdb=\"n23\", see IMDB below")  # fmt: skip
def imdb_ramanujan_gap(c):
    """IMDB Ramanujan gap ``mean_d c_d·Δr(G_d)`` over the degree groups ``G_d`` ([I23], [N23]),
    ``Δr(G_d) = √(d − 1) + √(d̄_out(G_d) − 1) − σ₂(G_d)``, ``c_d`` the Cheeger weight
    ``max(|S_d|, |R_d|)/(|S_d| + |R_d| − 1)`` for ``imdb="n23"`` and 1 for ``"i23"``.

    Returns
    -------
    float
        NaN when no group survives the variant's rules.
    """
    groups = c.quantity("imdb_groups")
    if not _imdb_used(c, groups):
        return NaN
    return float(np.mean([_cheeger(c, g) * (_imdb_bound(g) - float(g.sv[1])) for g in groups]))


@_metric(group="imdb", description="mean Δr/bound over nested regular subgraphs",
         depends=("imdb_groups",), defined="a group survives",
         note="I23's \"IMDB\"")  # fmt: skip
def imdb_ramanujan_gap_norm(c):
    """Normalized IMDB gap ``mean_d Δr(G_d)/bound(G_d)``, plain mean (the "IMDB" of [I23]).

    Returns
    -------
    float
        NaN when no group survives the variant's rules.
    """
    groups = c.quantity("imdb_groups")
    if not _imdb_used(c, groups):
        return NaN
    drns = []
    for g in groups:
        bound = _imdb_bound(g)
        drns.append((bound - float(g.sv[1])) / bound)
    return float(np.mean(drns))


@_metric(group="imdb", description="degree groups used by IMDB", depends=("imdb_groups",),
         integer=True)  # fmt: skip
def imdb_n_groups(c):
    """Number of IMDB degree groups that survive the variant's rules ([I23], [N23]).

    Returns
    -------
    int
    """
    return len(c.quantity("imdb_groups"))


@_metric(group="imdb", description="mean λ over nested regular subgraphs", weighted=True,
         depends=("imdb_weighted",), defined="a group survives",
         note="`c_d`-weighted for imdb=\"n23\"")  # fmt: skip
def imdb_weighted_gap(c):
    """Weighted IMDB gap ``mean_d c_d·λ(G_d)``, ``λ(G_d) = σ₁ − σ₂`` of the group on
    ``|W ⊙ M|`` ([N23]); ``c_d`` as in ``imdb_ramanujan_gap``.

    Returns
    -------
    float
        NaN when no group survives the variant's rules.
    """
    groups = c.quantity("imdb_weighted")
    if not _imdb_used(c, groups):
        return NaN
    return float(np.mean([_cheeger(c, g) * float(g.sv[0] - g.sv[1]) for g in groups]))


# --------------------------------------------------------------------------------------------
# NaRC ([I23] code; UNCONFIRMED against the paper text, pags-spec A8)
# --------------------------------------------------------------------------------------------


@_metric(group="narc", description="I23's normalised random coefficient (gated, i23 gate)",
         depends=("mu_hat", "deg_out_mean", "deg_in_mean"), defined="i23 gate",
         note="see NaRC below")  # fmt: skip
def narc(c):
    """[I23]'s normalised random coefficient, inputs as the left side:
    ``[(mu_hat²/4 + 1)·√(n_L n_R) − |e − (d̄_L/n_out)·n_L n_R|] / (n_in·n_out)`` with
    ``n_L = n_in'``, ``n_R = n_out'``, ``d̄_L = d̄_in`` and ``e = 2|E|`` (``narc="directed"``) or
    ``|E|`` (``"undirected"``).

    Returns
    -------
    float
        NaN unless the layer passes the i23 gate (whatever ``gate`` says).
    """
    if not c.two_per_side():
        return NaN
    if not _gate_ok("i23", c["deg_out_mean"], c["deg_in_mean"]):
        c.why("narc undefined: i23 gate fails (mean degrees must both be >= 3)")
        return NaN
    L = c.layer
    n_l, n_r = L.n_in_active, L.n_out_active
    e = (2 if c.options.narc == "directed" else 1) * L.n_edges
    d_l = L.n_edges / n_l
    root = math.sqrt(n_l * n_r)
    return ((c["mu_hat"] ** 2 / 4 + 1) * root - abs(e - d_l / L.n_out * n_l * n_r)) / (
        L.n_in * L.n_out
    )


# --------------------------------------------------------------------------------------------
# Full-spectrum coordinate ([N23])
# --------------------------------------------------------------------------------------------


@_metric(group="full_spectrum", description="‖(Δr, λ, IMDB_Δr, IMDB_λ)‖₂", weighted=True,
         depends=("is_ramanujan", "ramanujan_gap", "weighted_spectral_gap",
                  "imdb_ramanujan_gap", "imdb_weighted_gap"),
         note="undefined entries as 0 [N23]")  # fmt: skip
def full_spectrum_norm(c):
    """Norm of [N23]'s full-spectrum coordinate, ``‖(Δr, λ, IMDB_Δr, IMDB_λ)‖₂``, undefined
    entries counted as 0, and Δr, λ counted as 0 when the layer fails the gate (the N23 code
    computes λ after the gate). Its network mean is N23's score.

    Returns
    -------
    float
        Always defined.
    """
    ok = c["is_ramanujan"] is not None
    coord = [
        c["ramanujan_gap"] if ok else 0.0,
        c["weighted_spectral_gap"] if ok else 0.0,
        c["imdb_ramanujan_gap"],
        c["imdb_weighted_gap"],
    ]
    return math.hypot(*(0.0 if math.isnan(x) else x for x in coord))


# --------------------------------------------------------------------------------------------
# Expansion ([Chung97])
# --------------------------------------------------------------------------------------------


@_metric(group="expansion", description="1 − σ2(D_out^-½ B D_in^-½)",
         depends=("sv_normalized",), defined="≥ 2 active nodes per side",
         note="= λ₂ of the normalized Laplacian")  # fmt: skip
def normalized_spectral_gap(c):
    """Spectral gap of the normalized biadjacency, ``1 − σ₂(D_out^{-½} B D_in^{-½})``: the
    second-smallest eigenvalue λ₂ of the normalized Laplacian ([Chung97]), clipped to [0, 1].

    Returns
    -------
    float
        NaN unless both sides have at least 2 active nodes.
    """
    if not c.two_per_side():
        return NaN
    gap = 1.0 - float(c.quantity("sv_normalized")[1])
    return min(max(gap, 0.0), 1.0)  # σ₂ of the normalized matrix lies in [0, 1]


@_metric(group="expansion", description="Cheeger lower bound on conductance, gap/2",
         depends=("normalized_spectral_gap",), defined="as `normalized_spectral_gap`",
         note="[Chung97]")  # fmt: skip
def conductance_lower(c):
    """Cheeger lower bound on the conductance, ``λ₂/2 ≤ h(G)`` ([Chung97]).

    Returns
    -------
    float
    """
    return c["normalized_spectral_gap"] / 2


@_metric(group="expansion", description="Cheeger upper bound on conductance, √(2·gap)",
         depends=("normalized_spectral_gap",), defined="as `normalized_spectral_gap`",
         note="[Chung97]")  # fmt: skip
def conductance_upper(c):
    """Cheeger upper bound on the conductance, ``h(G) ≤ √(2λ₂)`` ([Chung97]).

    Returns
    -------
    float
    """
    return math.sqrt(2 * c["normalized_spectral_gap"])


_seal_builtins()
