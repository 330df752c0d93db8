"""Figures of one layer: degree histograms (:func:`plot_degrees`), the spectrum
(:func:`plot_spectrum`) and the bipartite drawing (:func:`plot_bipartite`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import MaskValidationError, UnknownNameError
from .series import _short
from .style import (
    BLACK,
    GREY,
    OKABE_ITO,
    _finish,
    _legend,
    _new_axes,
    _new_figure,
    _styled,
    _title,
    _title_text,
    _wrap,
)


def _layer(maskset_or_mask, layer: str | None) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    from ..masks import MaskSet, check_layer_mask

    if isinstance(maskset_or_mask, MaskSet):
        if layer is None:
            raise MaskValidationError(
                f"name the layer to plot; layers: {', '.join(maskset_or_mask.names)}"
            )
        mask = maskset_or_mask[layer]
        w = maskset_or_mask.weights[layer] if maskset_or_mask.has_weights else None
        return layer, mask, w
    if isinstance(maskset_or_mask, Mapping):
        raise MaskValidationError("pass a MaskSet and a layer name, or a single mask tensor")
    return layer or "layer", check_layer_mask(layer or "layer", maskset_or_mask), None


@_styled
def plot_degrees(
    maskset,
    layer: str | None = None,
    *,
    conv: str = "unrolled",
    path: str | Path | None = None,
    title: str | None = None,
):
    """Degree distributions of one layer's bipartite graph: output fan-in and input fan-out.

    Degrees count kept entries (with multiplicity for ``conv="rolled"``), as the metrics do
    (:mod:`masktopo.analysis.graph`). Nodes of degree 0 (isolated; the metrics drop them) are
    counted in the bar at 0. The dashed line is the mean degree of the active nodes, ``d̄_out``
    and ``d̄_in``.

    Parameters
    ----------
    maskset : MaskSet or torch.Tensor
        A MaskSet (with ``layer``) or one mask.
    layer : str, optional
        The layer's name in the MaskSet.
    conv : {"unrolled", "rolled"}
        How a convolution becomes a graph.
    path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (outputs, inputs).
    """
    from matplotlib.ticker import MaxNLocator

    from ..analysis.graph import biadjacency

    name, mask, _ = _layer(maskset, layer)
    B = biadjacency(mask, conv).to(torch.int64)
    deg_out = B.sum(dim=1).cpu().numpy()
    deg_in = B.sum(dim=0).cpu().numpy()
    fig = _new_figure((9, 4))
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], deg_out, "outputs: fan-in (kept entries per output unit)", OKABE_ITO[3], "d̄_out"),
        (axes[1], deg_in, "inputs: fan-out (kept entries per input node)", OKABE_ITO[4], "d̄_in"),
    )
    for ax, deg, xlabel, colour, sym in panels:
        top = int(deg.max(initial=0))
        if top <= 80:
            bins = np.arange(top + 2) - 0.5
        else:
            bins = np.linspace(-0.5, top + 0.5, 61)
        ax.hist(
            deg,
            bins=bins,
            color=colour,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.5,
            label=f"{deg.size} nodes",
        )
        active = deg[deg > 0]
        if active.size:
            mean = float(active.mean())
            ax.axvline(mean, color=BLACK, ls="--", lw=1.2, label=f"{sym} = {mean:.3g} (active)")
        n0 = int((deg == 0).sum())
        if n0:
            ax.plot([], [], " ", label=f"{n0} isolated (degree 0)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("number of nodes (count)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if top <= 80:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax, outside=False, loc="best", frameon=True, framealpha=0.9, edgecolor="0.85")
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    text = _title_text(title, f"degree distribution of {_short(name)} ({shape}{mode})")
    if text:
        fig.suptitle(_wrap(text, 100), fontsize=10)
    return _finish(fig, path)


#: The largest stripped biadjacency :func:`plot_spectrum` decomposes (entries).
MAX_SPECTRUM_ENTRIES = 30_000_000


@_styled
def plot_spectrum(
    maskset,
    layer: str | None = None,
    *,
    conv: str = "unrolled",
    weighted: bool = False,
    max_entries: int = MAX_SPECTRUM_ENTRIES,
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """Singular values of a layer's biadjacency, with the Ramanujan bound marked.

    The bipartite adjacency has eigenvalues ``±σᵢ(B)`` (pags-spec §2): ``μ₀ = σ₁`` is the trivial
    eigenvalue and ``μ̂ = σ₂`` the largest non-trivial one. The layer meets the Ramanujan bound
    when ``μ̂ ≤ √(d̄_in − 1) + √(d̄_out − 1)`` (the [MSS15] biregular bound with average degrees,
    as both papers' code uses; pags-spec §3.1), i.e. when Δr ≥ 0. Values are computed on ``B``
    with isolated nodes dropped, exactly (dense SVD, float64), and the bound, μ̂ and Δr are those
    of :func:`masktopo.analysis.layer_metrics`.

    Parameters
    ----------
    maskset : MaskSet or torch.Tensor
        A MaskSet (with ``layer``) or one mask.
    layer : str, optional
        The layer's name in the MaskSet.
    conv : {"unrolled", "rolled"}
        How a convolution becomes a graph.
    weighted : bool
        Plot the singular values of ``|W ⊙ M|`` instead (needs weights; the Ramanujan bound does
        not apply to them and is not drawn; ``λ = σ₁ − σ₂`` is marked).
    max_entries : int
        Refuse a stripped biadjacency larger than this (a dense SVD costs ``O(m·n·min(m, n))``).
    ax, path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..analysis.graph import biadjacency, strip_isolated, weighted_biadjacency
    from ..analysis.metrics import layer_metrics

    name, mask, w = _layer(maskset, layer)
    if weighted and w is None:
        raise MaskValidationError(f"layer {name!r}: weighted=True needs a MaskSet with weights")
    B = biadjacency(mask, conv)
    Bw = weighted_biadjacency(mask, w, conv) if weighted else None
    g = strip_isolated(B, Bw)
    M = g.Bw if weighted else g.B
    if M.numel() == 0:
        raise MaskValidationError(f"layer {name!r} has no kept entry: no spectrum to plot")
    if M.numel() > max_entries:
        raise MaskValidationError(
            f"layer {name!r}: the stripped biadjacency {tuple(M.shape)} has {M.numel():,} "
            f"entries, more than max_entries={max_entries:,}; raise it to plot anyway"
        )
    sv = np.linalg.svd(M.cpu().numpy(), compute_uv=False)
    fig, ax = _new_axes(ax)
    idx = np.arange(1, sv.size + 1)
    colour = OKABE_ITO[3] if not weighted else OKABE_ITO[4]
    ax.plot(idx, sv, "o", color=colour, ms=3, linestyle="none", label=f"σᵢ ({sv.size} values)")
    sym = "λ" if weighted else "Δr"
    if sv.size >= 2:
        ax.plot([1], sv[:1], "o", mfc="white", mec=BLACK, ms=8, label=f"μ₀ = σ₁ = {sv[0]:.4g}")
        ax.plot([2], sv[1:2], "D", color=OKABE_ITO[4] if not weighted else OKABE_ITO[3], ms=6,
                label=f"μ̂ = σ₂ = {sv[1]:.4g}")  # fmt: skip
    if not weighted:
        r = layer_metrics(mask, conv=conv, metrics=["ramanujan_bound", "ramanujan_gap"])
        bound, gap = r["ramanujan_bound"], r["ramanujan_gap"]
        gap_text = f"Δr = {gap:.4g}" if math.isfinite(gap) else "Δr undefined (gate fails)"
        ax.axhline(bound, color=OKABE_ITO[2], ls="--", lw=1.5,
                   label=f"Ramanujan bound\n√(d̄_in−1)+√(d̄_out−1) = {bound:.4g}\n{gap_text}")  # fmt: skip
    elif sv.size >= 2:
        ax.plot([], [], " ", label=f"λ = σ₁ − σ₂ = {sv[0] - sv[1]:.4g}")
    ax.set_xlabel("index i (singular values in decreasing order)")
    ax.set_ylabel("σᵢ of |W⊙M| (units of |w|)" if weighted else "σᵢ of B (eigenvalue of A)")
    if sv.size > 50:
        ax.set_xscale("log")
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    kind = "weighted spectrum" if weighted else "spectrum"
    _title(ax, title, f"{kind} of {_short(name)} ({shape}{mode}; {sym} marked)")
    _legend(ax)
    return _finish(fig, path)


#: Default size limits of :func:`plot_bipartite`: above them a layer is grouped or sampled.
MAX_DRAW_NODES = 400


MAX_DRAW_EDGES = 2_000


#: Blocks per side of an aggregated :func:`plot_bipartite` drawing (at most 20 × 20 lines).
MAX_GROUPS = 20


#: How :func:`plot_bipartite` draws a layer above its limits.
LARGE_MODES = ("auto", "aggregate", "sample", "error")


@_styled
def plot_bipartite(
    maskset,
    layer: str | None = None,
    *,
    conv: str = "rolled",
    max_nodes: int = MAX_DRAW_NODES,
    max_edges: int = MAX_DRAW_EDGES,
    large: str = "auto",
    seed: int = 0,
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """Draw a layer as a bipartite graph: inputs on the left, outputs on the right.

    Each kept entry (or, for a ``rolled`` conv, each channel pair with at least one kept kernel
    entry; the line gets darker with the number of entries) is a line from its input node to its
    output node. Isolated nodes are drawn hollow and grey.

    A layer above the limits is not drawn line by line (thousands of lines give an unreadable,
    heavy figure). By default (``large="auto"``) a layer with more than ``max_nodes`` nodes is
    *aggregated*: each side is cut into at most :data:`MAX_GROUPS` blocks of consecutive nodes,
    and a line joins two blocks with at least one kept entry between them, darker and thicker with
    the fraction of the block pair's entries that are kept; a layer with few enough nodes but more
    than ``max_edges`` edges is *sampled*: ``max_edges`` edges drawn uniformly at random (fixed
    ``seed``, so the same layer gives the same figure). The figure says so in the legend's title
    (e.g. "showing 2,000 of 23,520 edges, sampled uniformly at random").

    Parameters
    ----------
    maskset : MaskSet or torch.Tensor
        A MaskSet (with ``layer``) or one mask.
    layer : str, optional
        The layer's name in the MaskSet.
    conv : {"rolled", "unrolled"}
        ``rolled`` (default here: channels as nodes, readable for convs) or ``unrolled`` (every
        kernel entry its own input node, as the metrics read convs by default).
    max_nodes, max_edges : int
        The largest layer drawn node by node and edge by edge.
    large : {"auto", "aggregate", "sample", "error"}
        What to do above the limits: ``auto`` (aggregate above ``max_nodes``, else sample above
        ``max_edges``), always ``aggregate``, always ``sample`` (every node drawn), or ``error``
        (raise, naming the layer's size).
    seed : int
        The seed of the edge sample.
    ax, path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    MaskValidationError
        With ``large="error"``, when the layer has more nodes or edges than the limits (the
        message gives its size).
    UnknownNameError
        For an unknown ``large``.
    """
    from ..analysis.graph import biadjacency

    if large not in LARGE_MODES:
        raise UnknownNameError("large-layer mode", large, LARGE_MODES)
    name, mask, _ = _layer(maskset, layer)
    B = biadjacency(mask, conv).to(torch.int32).cpu().numpy()
    n_out, n_in = B.shape
    n_edges = int(np.count_nonzero(B))
    too_many_nodes, too_many_edges = n_out + n_in > max_nodes, n_edges > max_edges
    if (too_many_nodes or too_many_edges) and large == "error":
        raise MaskValidationError(
            f"layer {name!r} has {n_in + n_out:,} nodes and {n_edges:,} edges ({conv}); "
            f"plot_bipartite draws at most max_nodes={max_nodes:,} and max_edges={max_edges:,} "
            "(raise them, or pass large='aggregate' or 'sample', to draw it anyway)"
        )
    if large == "auto":
        large = "aggregate" if too_many_nodes else "sample"
    aggregate = large == "aggregate" and (too_many_nodes or too_many_edges)
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    if aggregate:
        fig, ax, note = _draw_blocks(ax, B)
    else:
        fig, ax, note = _draw_edges(ax, B, max_edges if too_many_edges else None, seed)
        if conv == "rolled" and mask.ndim > 2:
            note = "darker = more kernel entries" + (f"; {note}" if note else "")
    _title(ax, title, f"{_short(name)} as a bipartite graph ({shape}{mode}, {n_edges:,} edges)")
    ax.set_xlim(-0.25, 1.25)
    ax.set_ylabel(f"{'block of nodes' if aggregate else 'node'} (index in its side, 0 at the top)")
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2 if aggregate else 4,
              title=note or None,
              title_fontsize=8)  # fmt: skip
    return _finish(fig, path)


_BLUE = (0.0, 0.447, 0.698)  # Okabe–Ito blue, OKABE_ITO[3]


def _side_positions(n: int, top: float) -> np.ndarray:
    return np.zeros(1) if n == 1 else np.linspace(0, top, n)


def _bipartite_axes(ax, n_rows: int):
    return _new_axes(ax, figsize=(6, max(3.5, min(8.0, 0.12 * n_rows + 2))))


def _draw_nodes(ax, y_in, y_out, deg_in, deg_out, labels) -> None:
    size = float(np.clip(2500 / max(len(y_in), len(y_out)), 4, 18))
    for xpos, ys, deg, label, colour in (
        (0.0, y_in, deg_in, labels[0], OKABE_ITO[0]),
        (1.0, y_out, deg_out, labels[1], OKABE_ITO[4]),
    ):
        act = deg > 0
        ax.scatter(np.full(act.sum(), xpos), ys[act], s=size, color=colour, zorder=3, label=label,
                   linewidths=0)  # fmt: skip
        if (~act).any():
            ax.scatter(np.full((~act).sum(), xpos), ys[~act], s=size, facecolors="white",
                       edgecolors=GREY, zorder=3)  # fmt: skip
    ax.scatter([], [], s=18, facecolors="white", edgecolors=GREY, label=labels[2])


def _segments(y_in, y_out, i, o) -> np.ndarray:
    return np.stack(
        [np.stack([np.zeros(o.size), y_in[i]], 1), np.stack([np.ones(o.size), y_out[o]], 1)], 1
    )


def _draw_edges(ax, B: np.ndarray, sample: int | None, seed: int):
    """Every node, and every edge or ``sample`` of them drawn at random."""
    from matplotlib.collections import LineCollection

    n_out, n_in = B.shape
    o, i = np.nonzero(B)
    total = o.size
    note = ""
    if sample is not None and total > sample:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
        o, i = o[keep], i[keep]
        note = f"showing {o.size:,} of {total:,} edges, sampled uniformly at random"
    fig, ax = _bipartite_axes(ax, max(n_in, n_out))
    top = max(n_in, n_out) - 1
    y_in, y_out = _side_positions(n_in, top), _side_positions(n_out, top)
    mult = B[o, i]
    fade = min(1.0, (300 / max(o.size, 1)) ** 0.5)  # many lines: lighter, so overlaps show
    alpha = fade * (0.35 + 0.65 * (mult / max(int(mult.max(initial=1)), 1)))
    colours = np.tile(np.array([*_BLUE, 1.0]), (o.size, 1))
    colours[:, 3] = np.clip(alpha, 0.05, 1)
    lw = 0.8 if o.size <= 500 else 0.5
    ax.add_collection(LineCollection(_segments(y_in, y_out, i, o), colors=colours, linewidths=lw))
    ax.plot([], [], color=_BLUE, alpha=float(np.median(colours[:, 3])) if o.size else 1.0, lw=lw,
            label="kept entry")  # the legend's line: a typical one  # fmt: skip
    _draw_nodes(ax, y_in, y_out, B.sum(axis=0), B.sum(axis=1),
                ("input node", "output node", "isolated node"))  # fmt: skip
    ax.set_ylim(top + 1, -1)  # node 0 at the top
    ax.set_xticks([0, 1], [f"inputs ({n_in:,})", f"outputs ({n_out:,})"])
    return fig, ax, note


def _blocks(n: int) -> np.ndarray:
    """Start indices of at most :data:`MAX_GROUPS` blocks of consecutive nodes."""
    size = max(1, math.ceil(n / MAX_GROUPS))
    return np.arange(0, n, size)


def _draw_blocks(ax, B: np.ndarray):
    """Nodes grouped into blocks; one line per block pair with a kept entry."""
    from matplotlib.collections import LineCollection

    n_out, n_in = B.shape
    s_out, s_in = _blocks(n_out), _blocks(n_in)
    counts = np.add.reduceat(np.add.reduceat(B.astype(np.int64), s_out, 0), s_in, 1)
    size_out = np.diff(np.append(s_out, n_out))
    size_in = np.diff(np.append(s_in, n_in))
    dens = counts / np.outer(size_out, size_in)
    o, i = np.nonzero(counts)
    fig, ax = _bipartite_axes(ax, max(s_in.size, s_out.size))
    top = max(s_in.size, s_out.size) - 1
    y_in, y_out = _side_positions(s_in.size, top), _side_positions(s_out.size, top)
    rel = dens[o, i] / max(float(dens.max(initial=0)), 1e-12)
    colours = np.tile(np.array([*_BLUE, 1.0]), (o.size, 1))
    colours[:, 3] = 0.08 + 0.62 * rel
    ax.add_collection(LineCollection(_segments(y_in, y_out, i, o), colors=colours,
                                     linewidths=0.3 + 2.2 * rel))  # fmt: skip
    ax.plot([], [], color=_BLUE, alpha=0.5, lw=1.4, label="kept entries between two blocks")
    _draw_nodes(ax, y_in, y_out, counts.sum(axis=0), counts.sum(axis=1),
                ("input block", "output block", "block of isolated nodes"))  # fmt: skip
    ax.set_ylim(top + 1, -1)
    ax.set_xticks([0, 1], [f"inputs ({n_in:,} in {s_in.size} blocks)",
                           f"outputs ({n_out:,} in {s_out.size} blocks)"])  # fmt: skip
    b_in, b_out = int(size_in.max()), int(size_out.max())
    note = (
        f"aggregated: {n_in + n_out:,} nodes in blocks of ≤ {b_in:,} inputs and ≤ {b_out:,} "
        f"outputs; {int(np.count_nonzero(B)):,} edges as {o.size:,} block pairs, darker and "
        "thicker = larger fraction of the pair's entries kept"
    )
    return fig, ax, _wrap(note, 70)
