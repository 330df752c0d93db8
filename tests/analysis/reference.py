"""A slow, dense, deliberately plain numpy reference for every layer metric (tests only).

Written independently of :mod:`masktopo.analysis` from the research spec
(``pags-spec.md`` sections 1-3 and 7) and the working contract, so that the tests are a second
opinion rather than a copy. Nothing here is clever: full ``numpy.linalg.svd`` of small dense
matrices, python loops, a union-find for components. Use it only on small masks.

Conventions (contract):

* ``B`` is the mask reshaped to ``(out, -1)`` ("unrolled") or summed over the kernel dims
  ("rolled", edge multiplicities); ``Bw = |W * M|`` is reshaped/summed the same way. All-zero rows
  and columns of ``B`` are stripped (the same rows/columns of ``Bw``).
* Degrees count edges (with multiplicity when rolled); ``deg_out_mean`` is the mean fan-in of the
  active outputs, ``deg_in_mean`` the mean fan-out of the active inputs.
* ``mu_hat`` (and everything built on it) is NaN when either side has fewer than 2 active nodes.
* Gates: ``"n23"`` = ``deg_out_mean >= 3 and deg_in_mean > 1``; ``"i23"`` = both ``>= 3``. The IMDB
  ``"n23"`` gate swaps the sides (group degree ``d >= 3`` and mean output fan-in from the group
  ``> 1``).
* Weighted metrics are only returned when a weight is given.
"""

from __future__ import annotations

import math

import numpy as np

NAN = float("nan")

STRUCTURE_KEYS = (
    "n_out",
    "n_in",
    "n_edges",
    "density",
    "n_out_active",
    "n_in_active",
    "deg_out_mean",
    "deg_in_mean",
    "n_components",
)
INT_KEYS = (
    "n_out",
    "n_in",
    "n_edges",
    "n_out_active",
    "n_in_active",
    "n_components",
    "numel",
    "imdb_n_groups",
)
BOOL_KEYS = ("is_ramanujan",)
UNWEIGHTED_KEYS = (
    "mu0",
    "mu_hat",
    "spectral_gap",
    "ramanujan_bound",
    "ramanujan_gap",
    "ramanujan_gap_norm",
    "is_ramanujan",
    "imdb_ramanujan_gap",
    "narc",
    "normalized_spectral_gap",
    "conductance_lower",
    "conductance_upper",
    *STRUCTURE_KEYS,
)
WEIGHTED_KEYS = (
    "weighted_mu0",
    "weighted_mu_hat",
    "weighted_spectral_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
)
ALL_KEYS = UNWEIGHTED_KEYS + WEIGHTED_KEYS
# Spec quantities outside the contract's list of names ("+ a few extras"): compared only when the
# implementation returns them. ramanujan_gap_spectral is I23's Delta_s = 2 sqrt(mu0 - 1) - mu_hat
# (gated like ramanujan_gap); imdb_ramanujan_gap_norm is I23's "irm_norm", the plain mean of
# gap(G_d) / bound(G_d) over the surviving groups.
EXTRA_KEYS = ("numel", "imdb_n_groups", "imdb_ramanujan_gap_norm", "ramanujan_gap_spectral")

GATES = ("n23", "i23")
CONV_MODES = ("unrolled", "rolled")
NARC_MODES = ("directed", "undirected")


# --------------------------------------------------------------------------------------------
# graph construction
# --------------------------------------------------------------------------------------------


def to_numpy(x) -> np.ndarray:
    """A numpy float64 copy of a numpy array, a nested list or a (CPU or CUDA) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float64)


def biadjacency(mask, weight=None, conv: str = "unrolled"):
    """Full (unstripped) biadjacency ``B`` and weighted biadjacency ``Bw`` (or None).

    Rows are outputs, columns inputs. A mask with more than 2 dims is a convolution: "unrolled"
    flattens ``(C_in, *kernel)`` into the input side, "rolled" sums over the kernel dims.
    """
    if conv not in CONV_MODES:
        raise ValueError(f"unknown conv mode {conv!r}")
    m = (to_numpy(mask) != 0).astype(np.float64)
    w = None if weight is None else np.abs(to_numpy(weight) * m)
    if m.ndim > 2:
        if conv == "unrolled":
            m = m.reshape(m.shape[0], -1)
            w = None if w is None else w.reshape(w.shape[0], -1)
        else:
            axes = tuple(range(2, m.ndim))
            m = m.sum(axis=axes)
            w = None if w is None else w.sum(axis=axes)
    return m, w


def strip(B: np.ndarray, Bw: np.ndarray | None = None):
    """Remove all-zero rows and columns of ``B`` (and the same rows/columns of ``Bw``)."""
    rows = np.array([any(v != 0 for v in B[i, :]) for i in range(B.shape[0])], dtype=bool)
    cols = np.array([any(v != 0 for v in B[:, j]) for j in range(B.shape[1])], dtype=bool)
    Bs = B[rows][:, cols]
    Bws = None if Bw is None else Bw[rows][:, cols]
    return Bs, Bws


def singular_values(X: np.ndarray) -> np.ndarray:
    """All singular values of a dense matrix, descending (empty for an empty matrix)."""
    if X.size == 0:
        return np.zeros(0)
    return np.linalg.svd(X, compute_uv=False)


def count_components(B: np.ndarray) -> int:
    """Connected components of the bipartite graph of ``B`` on its non-isolated nodes."""
    n_out, n_in = B.shape
    parent = list(range(n_out + n_in))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    used = set()
    for o in range(n_out):
        for j in range(n_in):
            if B[o, j] != 0:
                a, b = find(o), find(n_out + j)
                if a != b:
                    parent[a] = b
                used.add(o)
                used.add(n_out + j)
    return len({find(i) for i in used})


def gate_passes(deg_out: float, deg_in: float, gate: str) -> bool:
    """The validity gate of the full layer graph (output side is "left" for "n23")."""
    if gate == "n23":
        return bool(deg_out >= 3 and deg_in > 1)
    if gate == "i23":
        return bool(deg_out >= 3 and deg_in >= 3)
    raise ValueError(f"unknown gate {gate!r}")


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------


def _top2(X: np.ndarray) -> tuple[float, float]:
    s = singular_values(X)
    s0 = float(s[0]) if s.size >= 1 else NAN
    s1 = float(s[1]) if s.size >= 2 else 0.0
    return s0, s1


def ramanujan_bound(deg_out: float, deg_in: float) -> float:
    """``sqrt(d_in - 1) + sqrt(d_out - 1)`` with average degrees."""
    return math.sqrt(deg_in - 1.0) + math.sqrt(deg_out - 1.0)


def imdb_values(B: np.ndarray, Bw: np.ndarray | None, variant: str = "n23"):
    """IMDB (nested d-left-regular subgraphs) of an (unstripped or stripped) biadjacency.

    Returns ``(imdb_ramanujan_gap, imdb_weighted_gap, groups)`` where ``groups`` lists the
    surviving groups as dicts (for tests that want to look inside). Values are NaN when no
    group survives; the weighted value is None when ``Bw`` is None.
    """
    if variant not in GATES:
        raise ValueError(f"unknown imdb variant {variant!r}")
    min_group = 2 if variant == "n23" else 3
    fan_out = B.sum(axis=0)
    groups = []
    for d in sorted({float(v) for v in fan_out if v != 0}):
        S = [j for j in range(B.shape[1]) if fan_out[j] == d]
        if len(S) < min_group:
            continue
        G = B[:, S]
        Gw = None if Bw is None else Bw[:, S]
        G, Gw = strip(G, Gw)
        n_s, n_r = G.shape[1], G.shape[0]
        e = float(G.sum())
        d_in = e / n_s  # == d
        d_out = e / n_r
        if variant == "n23":
            ok = d_in >= 3 and d_out > 1  # sides swapped: the input side is "left"
        else:
            ok = d_in >= 3 and d_out >= 3
        if not ok or n_s < 2 or n_r < 2:  # sigma2 needs two nodes on each side
            continue
        _, muh = _top2(G)
        bound = ramanujan_bound(d_out, d_in)
        gap = bound - muh
        c = max(n_s, n_r) / (n_s + n_r - 1) if variant == "n23" else 1.0
        wgap = None
        if Gw is not None:
            w0, w1 = _top2(Gw)
            wgap = w0 - w1
        groups.append(dict(d=d, n_s=n_s, n_r=n_r, c=c, bound=bound, gap=gap, wgap=wgap))
    if not groups:
        return NAN, (None if Bw is None else NAN), groups
    r = float(np.mean([g["c"] * g["gap"] for g in groups]))
    w = None if Bw is None else float(np.mean([g["c"] * g["wgap"] for g in groups]))
    return r, w, groups


# --------------------------------------------------------------------------------------------
# the layer metrics
# --------------------------------------------------------------------------------------------


def layer_metrics(
    mask,
    weight=None,
    conv: str = "unrolled",
    *,
    gate: str = "n23",
    imdb: str = "n23",
    narc: str = "directed",
) -> dict:
    """Every metric of one layer, computed the slow obvious way (see module docstring)."""
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}")
    if narc not in NARC_MODES:
        raise ValueError(f"unknown narc mode {narc!r}")
    mask_np = to_numpy(mask) != 0
    B_full, Bw_full = biadjacency(mask, weight, conv)
    n_out, n_in = B_full.shape
    n_edges = int(mask_np.sum())
    assert n_edges == round(float(B_full.sum()))
    B, Bw = strip(B_full, Bw_full)
    n_out_act, n_in_act = B.shape
    out: dict = dict(
        n_out=int(n_out),
        n_in=int(n_in),
        n_edges=n_edges,
        density=n_edges / mask_np.size,
        n_out_active=int(n_out_act),
        n_in_active=int(n_in_act),
        deg_out_mean=n_edges / n_out_act if n_out_act else NAN,
        deg_in_mean=n_edges / n_in_act if n_in_act else NAN,
        n_components=count_components(B),
        numel=int(mask_np.size),
    )
    deg_out, deg_in = out["deg_out_mean"], out["deg_in_mean"]
    has_hat = n_out_act >= 2 and n_in_act >= 2

    # spectrum of B
    mu0, s1 = _top2(B)
    mu_hat = s1 if has_hat else NAN
    out["mu0"] = mu0
    out["mu_hat"] = mu_hat
    out["spectral_gap"] = mu0 - mu_hat

    # Ramanujan
    bound = ramanujan_bound(deg_out, deg_in) if n_edges else NAN
    out["ramanujan_bound"] = bound
    gated = gate_passes(deg_out, deg_in, gate) and has_hat
    if gated:
        gap = bound - mu_hat
        out["ramanujan_gap"] = gap
        out["ramanujan_gap_norm"] = gap / bound
        out["is_ramanujan"] = bool(gap >= 0)
        out["ramanujan_gap_spectral"] = 2 * math.sqrt(max(mu0 - 1.0, 0.0)) - mu_hat
    else:
        out["ramanujan_gap"] = NAN
        out["ramanujan_gap_norm"] = NAN
        out["is_ramanujan"] = None
        out["ramanujan_gap_spectral"] = NAN

    # IMDB
    imdb_r, imdb_w, groups = imdb_values(B, Bw, imdb)
    out["imdb_ramanujan_gap"] = imdb_r
    out["imdb_n_groups"] = len(groups)
    out["imdb_ramanujan_gap_norm"] = (
        float(np.mean([g["gap"] / g["bound"] for g in groups])) if groups else NAN
    )

    # NaRC (I23 code-faithful: left = inputs; always the i23 gate)
    if has_hat and gate_passes(deg_out, deg_in, "i23"):
        n_l, n_r = n_in_act, n_out_act
        d_l = n_edges / n_in_act
        e = 2 * n_edges if narc == "directed" else n_edges
        num = (mu_hat**2 / 4 + 1) * math.sqrt(n_l * n_r) - abs(e - (d_l / n_out) * n_l * n_r)
        out["narc"] = num / (n_in * n_out)
    else:
        out["narc"] = NAN

    # normalized (random-walk) spectral gap and Cheeger bounds
    if has_hat:
        r = B.sum(axis=1)
        c = B.sum(axis=0)
        N = B / np.sqrt(np.outer(r, c))
        ngap = 1.0 - float(singular_values(N)[1])
        out["normalized_spectral_gap"] = ngap
        out["conductance_lower"] = ngap / 2
        out["conductance_upper"] = math.sqrt(2 * max(ngap, 0.0))
    else:
        out["normalized_spectral_gap"] = NAN
        out["conductance_lower"] = NAN
        out["conductance_upper"] = NAN

    # weighted
    if Bw is not None:
        w0, w1 = _top2(Bw)
        out["weighted_mu0"] = w0
        out["weighted_mu_hat"] = w1 if has_hat else NAN
        wgap = w0 - w1 if has_hat else NAN
        out["weighted_spectral_gap"] = wgap
        out["imdb_weighted_gap"] = imdb_w

        def zero(v: float) -> float:
            return 0.0 if math.isnan(v) else v

        coord = [
            zero(out["ramanujan_gap"]),
            zero(wgap) if gated else 0.0,
            zero(imdb_r),
            zero(imdb_w),
        ]
        out["full_spectrum_norm"] = math.sqrt(sum(v * v for v in coord))
    return out


# --------------------------------------------------------------------------------------------
# comparison helper for the tests
# --------------------------------------------------------------------------------------------


def _scale(key: str, expected: dict) -> float:
    """An absolute scale for ``key``: differences of singular values are compared against the
    size of the largest singular value, not against their own (possibly ~0) size."""
    mu0 = abs(expected.get("mu0", 1.0))
    if key.startswith("weighted_") or key == "imdb_weighted_gap":
        return abs(expected.get("weighted_mu0", 1.0))
    if key == "full_spectrum_norm":
        return max(1.0, mu0, abs(expected.get("weighted_mu0", 1.0)))
    if key == "narc":
        n = expected["n_in"] * expected["n_out"]
        return max(1.0, (mu0**2 / 4 + 1) * math.sqrt(n) + 2 * expected["n_edges"]) / n
    if key in ("normalized_spectral_gap", "conductance_lower"):
        return 1.0
    if key == "conductance_upper":
        return 1e3  # sqrt(2*gap) amplifies a 1e-16 gap to 1e-8
    return max(1.0, mu0)


def metric_mismatches(actual: dict, expected: dict, rtol: float = 1e-9) -> list[str]:
    """Human-readable differences between two metric dicts, for every key of ``expected``.

    NaN equals NaN; ints and bools (and None) are compared exactly; floats to ``rtol`` relative
    (relative to the larger of the two values or, for gaps, to the layer's spectral scale).
    ``is_ramanujan`` is not compared when the reference gap is within tolerance of 0.
    """
    bad = []
    for key, exp in expected.items():
        if key not in actual:
            if key in EXTRA_KEYS:
                continue
            bad.append(f"{key}: missing (expected {exp!r})")
            continue
        act = actual[key]
        if key in BOOL_KEYS:
            gap = expected.get("ramanujan_gap", NAN)
            if exp is not None and abs(gap) <= rtol * _scale("ramanujan_gap", expected):
                continue
            norm = None if act is None else act
            if norm is not None and not isinstance(norm, bool | np.bool_):
                bad.append(f"{key}: {act!r} is not a bool or None (expected {exp!r})")
            elif (None if norm is None else bool(norm)) != exp:
                bad.append(f"{key}: {act!r} != expected {exp!r}")
            continue
        if key in INT_KEYS:
            if isinstance(act, bool) or not isinstance(act, int | np.integer) or int(act) != exp:
                bad.append(f"{key}: {act!r} != expected {exp!r} (int)")
            continue
        if act is None or isinstance(act, bool):
            bad.append(f"{key}: {act!r} != expected {exp!r}")
            continue
        try:
            a = float(act)
        except (TypeError, ValueError):
            bad.append(f"{key}: {act!r} is not a number (expected {exp!r})")
            continue
        e = float(exp)
        if math.isnan(e) or math.isnan(a):
            if not (math.isnan(e) and math.isnan(a)):
                bad.append(f"{key}: {a!r} != expected {e!r}")
            continue
        tol = rtol * max(abs(a), abs(e), _scale(key, expected))
        if not abs(a - e) <= tol:
            bad.append(f"{key}: {a!r} != expected {e!r} (diff {abs(a - e):.3e} > tol {tol:.1e})")
    return bad
