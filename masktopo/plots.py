r"""Figures of mask topology: metrics over training, the full-spectrum plane, degrees, spectra.

Every function returns a :class:`matplotlib.figure.Figure` (built without ``pyplot``, so no global
state and no display is involved; Jupyter shows the returned figure) and, given ``path``, also
writes it: the format comes from the suffix (``.png``, ``.svg`` or ``.pdf``) and the file is
written atomically. Functions drawing into one set of axes also accept ``ax`` to draw into an
existing figure.

Run figures take the run-analysis table of :func:`masktopo.analysis.runs.analyze_run` (one row per
event and layer plus a ``"(network)"`` row per event; columns ``event``, ``step``, ``epoch``,
``layer``, the metrics of :mod:`masktopo.analysis.metrics` and the event scalars ``density``,
``R_s``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``). Values that are undefined (NaN)
are drawn as gaps in the lines, never as zeros.

Layer figures take a :class:`~masktopo.masks.MaskSet` and a layer name, or a single mask tensor.

Colours follow the Okabe–Ito palette, which stays distinguishable under the common forms of
colour-vision deficiency [OI08]_; with more layers than it has colours, layers are coloured along
the perceptually uniform, colour-blind-safe ``cividis`` map from input to output, with a colour bar.

=========================  ========================================================================
function                   figure
=========================  ========================================================================
:func:`plot_metric`        one metric against training step, one line per layer and the network
:func:`plot_runs`          one metric against training step for several runs
:func:`plot_spectrum_plane`  the full-spectrum coordinate plane (Δr, λ) with trajectories
:func:`plot_degrees`       fan-in / fan-out degree histograms of one layer
:func:`plot_spectrum`      singular values of one layer's biadjacency with the Ramanujan bound
:func:`plot_bipartite`     one small layer drawn as a bipartite graph
:func:`plot_run`           the standard set of figures of one or several runs, written to a folder
=========================  ========================================================================

References
----------
.. [OI08] M. Okabe, K. Ito, "Color Universal Design (CUD): How to make figures and presentations
   that are friendly to colorblind people", J*FLY, 2008.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .analysis.metrics import METRICS
from .errors import MaskValidationError, UnknownNameError
from .options import X_AXES

__all__ = [
    "FORMATS",
    "OKABE_ITO",
    "PLOT_METRICS",
    "STANDARD_METRICS",
    "plot_bipartite",
    "plot_degrees",
    "plot_metric",
    "plot_run",
    "plot_runs",
    "plot_spectrum",
    "plot_spectrum_plane",
    "save_figure",
]

#: Okabe–Ito colours (orange, sky blue, bluish green, blue, vermillion, reddish purple); yellow
#: is left out (too light for lines on white) and black is kept for the network line.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")
BLACK = "#000000"
GREY = "#999999"
NETWORK = "(network)"
#: File formats :func:`save_figure` writes (from the path's suffix).
FORMATS = ("png", "svg", "pdf")
#: The metrics :func:`plot_run` draws by default (those present in the table).
STANDARD_METRICS = (
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
    "density",
    "R_s",
    "accuracy",
)
#: The axis label of each x axis (the names: :data:`masktopo.options.X_AXES`).
_X_LABELS = {
    "step": "training step (optimizer steps)",
    "epoch": "epoch",
    "event": "mask event (index)",
}
_DPI = 150


@dataclass(frozen=True)
class PlotMetric:
    """A plottable quantity: table columns, axis label (with units) and title."""

    name: str
    columns: tuple[str, ...]
    label: str
    title: str
    event_scalar: bool = False  # one value per event (taken from the network rows)
    weighted: bool = False  # needs weights (masks dumped with weights)


def _registry() -> dict[str, PlotMetric]:
    dimless = "dimensionless"
    special = {
        "ramanujan_gap": ("Δr (eigenvalue, dimensionless)", "Ramanujan gap Δr = bound − μ̂"),
        "ramanujan_gap_norm": ("Δr / bound (dimensionless)", "normalised Ramanujan gap"),
        "ramanujan_bound": ("√(d̄_in−1) + √(d̄_out−1) (eigenvalue)", "Ramanujan bound"),
        "weighted_spectral_gap": ("λ (units of |w|)", "weighted spectral gap λ = σ₁ − σ₂ of |W⊙M|"),
        "imdb_ramanujan_gap": ("IMDB Δr (eigenvalue, dimensionless)",
                               "IMDB Δr (mean over nested regular subgraphs)"),
        "imdb_weighted_gap": ("IMDB λ (units of |w|)", "IMDB λ (mean over nested regular subgraphs)"),
        "full_spectrum_norm": ("‖(Δr, λ, IMDB Δr, IMDB λ)‖₂ (mixed units)",
                               "full-spectrum norm (N23)"),
        "density": ("density (fraction of weights kept)", "density"),
        "mu0": ("μ₀ = σ₁ (eigenvalue)", "largest eigenvalue μ₀"),
        "mu_hat": ("μ̂ = σ₂ (eigenvalue)", "largest non-trivial eigenvalue μ̂"),
        "is_ramanujan": ("fraction of layers (0–1)", "Ramanujan layers (Δr ≥ 0)"),
    }  # fmt: skip
    reg: dict[str, PlotMetric] = {}
    for name, m in METRICS.items():
        if name in special:
            label, title = special[name]
        else:
            unit = "count" if name.startswith("n_") or name.endswith("_n_groups") else dimless
            if m.weighted:
                unit = "units of |w|"
            label, title = f"{name} ({unit})", m.description
        reg[name] = PlotMetric(name, (name,), label, title, weighted=m.weighted)
    scalars = {
        "R_s": (("R_s",), "R_s (fraction of weights ever active)", "ITOP exploration rate R_s"),
        "accuracy": (("train_acc", "val_acc"), "accuracy (fraction correct)", "accuracy"),
        "train_acc": (("train_acc",), "accuracy (fraction correct)", "training accuracy"),
        "val_acc": (("val_acc",), "accuracy (fraction correct)", "validation accuracy"),
        "loss": (("train_loss", "val_loss"), "loss (training objective, nats)", "loss"),
        "train_loss": (("train_loss",), "loss (training objective, nats)", "training loss"),
        "val_loss": (("val_loss",), "loss (training objective, nats)", "validation loss"),
    }
    for name, (cols, label, title) in scalars.items():
        reg[name] = PlotMetric(name, cols, label, title, event_scalar=True)
    return reg


#: Name → :class:`PlotMetric`: every analysis metric plus ``R_s``, ``accuracy``, ``loss`` and the
#: individual ``train_*`` / ``val_*`` scalars.
PLOT_METRICS: dict[str, PlotMetric] = _registry()


# ------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------
def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UnknownNameError("figure format (file suffix)", fmt or "<none>", FORMATS)
    return fmt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically to ``path``, in the format of its suffix (png, svg, pdf).

    SVG and PDF are written without a creation date, so the same figure gives the same bytes.

    Raises
    ------
    UnknownNameError
        For a suffix that is not a known format.
    MaskFileError
        When the file cannot be written (e.g. its folder does not exist).
    """
    import matplotlib

    from .files import atomic_write

    path = Path(path)
    fmt = _format_of(path)
    meta = {"png": {"Software": "masktopo"}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}

    def write(f):
        with matplotlib.rc_context({"svg.hashsalt": "masktopo"}):
            fig.savefig(f, format=fmt, dpi=_DPI, metadata=meta[fmt])

    atomic_write(path, write)
    return path


def _finish(fig, path) -> Any:
    if path is not None:
        save_figure(fig, path)
    return fig


def _new_axes(ax, figsize=(7.5, 4.5)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def _metric(name: str, tables: Sequence) -> PlotMetric:
    if not isinstance(name, str):
        raise MaskValidationError(f"a metric name must be a string, not {type(name).__name__}")
    if name in PLOT_METRICS:
        pm = PLOT_METRICS[name]
    else:
        numeric = {c for t in tables for c in t.columns if _is_numeric(t[c])}
        numeric -= {"event", "step", "epoch"}
        if name not in numeric:
            raise UnknownNameError("metric", name, set(PLOT_METRICS) | numeric)
        pm = PlotMetric(name, (name,), name, name)
    for t in tables:
        missing = [c for c in pm.columns if c not in t.columns]
        if len(missing) == len(pm.columns):
            raise MaskValidationError(
                f"metric {name!r}: the table has no column {' or '.join(map(repr, pm.columns))}"
                + (
                    " (a weighted metric: it needs masks dumped with weights)"
                    if pm.weighted
                    else ""
                )
            )
    return pm


def _is_numeric(s) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _values(s) -> np.ndarray:
    """A column as float64 with NaN for missing values (nullable ints/booleans included)."""
    import pandas as pd

    try:
        return s.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _check_table(table, x: str, what: str = "table"):
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise MaskValidationError(
            f"expected a run-analysis table (pandas.DataFrame), not {type(table).__name__}"
        )
    if x not in X_AXES:
        raise UnknownNameError("x axis", x, X_AXES)
    missing = [c for c in ("event", "layer", x) if c not in table.columns]
    if missing:
        raise MaskValidationError(
            f"{what} is not a run-analysis table: it lacks column(s) {', '.join(missing)}"
        )
    if len(table) == 0:
        raise MaskValidationError(f"{what} has no rows")
    return table


def _tables(table_or_tables, labels) -> tuple[list, list[str]]:
    import pandas as pd

    if isinstance(table_or_tables, pd.DataFrame):
        tables = [table_or_tables]
    elif isinstance(table_or_tables, Mapping):
        if labels is None:
            labels = [str(k) for k in table_or_tables]
        tables = list(table_or_tables.values())
    else:
        tables = list(table_or_tables)
    if not tables:
        raise MaskValidationError("no run-analysis table given")
    if labels is None:
        labels = [_run_label(t, i) for i, t in enumerate(tables)]
    labels = [str(x) for x in labels]
    if len(labels) != len(tables):
        raise MaskValidationError(f"{len(labels)} labels for {len(tables)} tables")
    return tables, labels


def _run_label(table, i: int) -> str:
    run = getattr(table, "attrs", {}).get("run")
    return Path(str(run)).name if run else f"run {i + 1}"


def _layer_order(table) -> list[str]:
    return list(dict.fromkeys(x for x in table["layer"] if x != NETWORK))


def _series(table, layer: str, column: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """One value per event (NaN where the layer has no row or no value), sorted by ``x``."""
    import pandas as pd

    events = np.unique(table["event"].to_numpy())
    if x == "event":
        per_event = pd.Series(events, index=events)
    else:
        per_event = table.drop_duplicates("event").set_index("event")[x]
    rows = table[table["layer"] == layer].drop_duplicates("event").set_index("event")
    y = np.full(events.size, np.nan)
    if column in rows.columns and len(rows):
        vals = _values(rows[column])
        pos = np.searchsorted(events, rows.index.to_numpy())
        y[pos] = vals
    xs = _values(per_event.reindex(events))
    order = np.argsort(xs, kind="stable")
    return xs[order], y[order]


def _scalar_series(table, column: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """An event scalar, from the network rows (or the first row of each event)."""
    if not (table["layer"] == NETWORK).any():
        table = table.drop_duplicates("event").assign(layer=NETWORK)
    return _series(table, NETWORK, column, x)


def _layer_colours(n: int):
    """``n`` colours: Okabe–Ito when they suffice, else cividis from input to output."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n]), None
    from matplotlib import colormaps

    cmap = colormaps["cividis"]
    return [cmap(0.92 * i / max(n - 1, 1)) for i in range(n)], cmap


def _layer_colourbar(fig, ax, names: list[str], colours) -> None:
    """A discrete colour bar naming (up to 8 of) the layers, input at the bottom."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = len(names)
    sm = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colours))
    cb = fig.colorbar(sm, ax=ax, pad=0.01, fraction=0.04)
    ticks = sorted({round(i) for i in np.linspace(0, n - 1, min(n, 8))})
    cb.set_ticks(ticks)
    cb.set_ticklabels([_short(names[i]) for i in ticks], fontsize=7)
    cb.set_label("layer (input → output)")


def _short(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _select_layers(table, layers) -> list[str]:
    known = _layer_order(table)
    if layers is None:
        chosen = known
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        for name in chosen:
            if name not in known and name != NETWORK:
                raise UnknownNameError("layer", name, known)
        chosen = [c for c in chosen if c != NETWORK]
    return chosen


# ------------------------------------------------------------------------------------------------
# Metrics over training
# ------------------------------------------------------------------------------------------------
def plot_metric(
    table,
    metric: str,
    *,
    x: str = "step",
    layers: Iterable[str] | str | None = None,
    network: bool = True,
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """One metric of one run against training step: a line per layer and the network line.

    Parameters
    ----------
    table : pandas.DataFrame
        A run-analysis table (module docstring).
    metric : str
        A name of :data:`PLOT_METRICS` (every analysis metric, ``R_s``, ``accuracy``, ``loss``,
        ``train_acc``, ...) or another numeric column of the table. Event scalars (``R_s``,
        accuracies, losses) are drawn once per event, train solid and validation dashed.
    x : {"step", "epoch", "event"}
        The horizontal axis.
    layers : str or iterable of str, optional
        Layers to draw (default: all); ``[]`` draws the network line only.
    network : bool
        Draw the ``"(network)"`` row (black, thick): the aggregate of
        :func:`masktopo.analysis.aggregate` (means over layers; global density).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    path : str or Path, optional
        Also write the figure there (format from the suffix).
    title : str, optional
        Replaces the default title.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    UnknownNameError
        For an unknown metric (the message lists the known ones), layer or ``x``.
    MaskValidationError
        For a table that is not a run-analysis table or lacks the metric's column.
    """
    _check_table(table, x)
    pm = _metric(metric, [table])
    fig, ax = _new_axes(ax)
    if pm.event_scalar:
        for col, style in zip(pm.columns, ("-", "--"), strict=False):
            if col not in table.columns:
                continue
            xs, ys = _scalar_series(table, col, x)
            ax.plot(xs, ys, style, color=BLACK, marker=".", ms=4, lw=1.8, label=col)
        what = ""
    else:
        # A mask metric is constant between two events (the mask only changes at events): a
        # step line; a weighted one changes with the weights in between: a line between events.
        draw = "default" if pm.weighted else "steps-post"
        chosen = _select_layers(table, layers)
        colours, cmap = _layer_colours(len(chosen))
        for name, colour in zip(chosen, colours, strict=True):
            xs, ys = _series(table, name, pm.columns[0], x)
            label = _short(name) if cmap is None else f"_{name}"  # "_": colour bar, no legend
            ax.plot(xs, ys, color=colour, marker=".", ms=3, lw=1.2, label=label, drawstyle=draw)
        if network and (table["layer"] == NETWORK).any():
            xs, ys = _series(table, NETWORK, pm.columns[0], x)
            ax.plot(xs, ys, color=BLACK, marker=".", ms=4, lw=2.4, label="network", zorder=5,
                    drawstyle=draw)  # fmt: skip
        if cmap is not None:
            _layer_colourbar(fig, ax, chosen, colours)
        what = " per layer" if chosen else ""
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(pm.label)
    run = _run_label(table, 0) if table.attrs.get("run") else None
    _title(ax, title or f"{pm.title}{what}" + (f" — {run}" if run else ""))
    _legend(ax)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _title(ax, text: str) -> None:
    """A title wrapped to the axes' width (about 11 characters per inch at 10 pt)."""
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(_wrap(text, max(30, int(width * 11))), fontsize=10)


def _legend(ax, **kw) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, framealpha=0.85, **kw)


def plot_runs(
    tables,
    metric: str,
    *,
    labels: Sequence[str] | None = None,
    layer: str = NETWORK,
    x: str = "step",
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """One metric against training step for several runs, one colour per run.

    Parameters
    ----------
    tables : sequence of DataFrame, or mapping label → DataFrame
        Run-analysis tables.
    metric : str
        As in :func:`plot_metric`.
    labels : sequence of str, optional
        Legend labels (default: the mapping's keys, the run folder names in ``attrs["run"]``,
        or "run 1", "run 2", ...).
    layer : str
        Which row to compare: ``"(network)"`` (default) or a layer name. Event scalars ignore it.
    x, ax, path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    tables, labels = _tables(tables, labels)
    for i, t in enumerate(tables):
        _check_table(t, x, f"table {i + 1} ({labels[i]})")
    pm = _metric(metric, tables)
    if not pm.event_scalar and layer != NETWORK:
        for t in tables:
            _select_layers(t, [layer])
    fig, ax = _new_axes(ax)
    colours = _cycle(len(tables))
    for t, label, colour in zip(tables, labels, colours, strict=True):
        for col, style in zip(pm.columns, ("-", "--"), strict=False):
            if col not in t.columns:
                continue
            if pm.event_scalar:
                xs, ys = _scalar_series(t, col, x)
            else:
                xs, ys = _series(t, layer, col, x)
            name = label if len(pm.columns) == 1 else f"{label}: {col}"
            ax.plot(xs, ys, style, color=colour, marker=".", ms=4, lw=1.6, label=name)
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(pm.label)
    where = "" if pm.event_scalar else (" (network)" if layer == NETWORK else f" ({layer})")
    _title(ax, title or f"{pm.title}{where}: {len(tables)} run(s)")
    _legend(ax)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def _cycle(n: int) -> list:
    """Okabe–Ito, then black, repeating with a darker shade when more runs than colours."""
    base = [*OKABE_ITO, BLACK]
    return [base[i % len(base)] for i in range(n)]


def plot_spectrum_plane(
    tables,
    *,
    labels: Sequence[str] | None = None,
    layers: str | Iterable[str] = NETWORK,
    coords: tuple[str, str] = ("ramanujan_gap", "weighted_spectral_gap"),
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """The full-spectrum coordinate plane: trajectories of (Δr, λ) over training.

    N23's full-spectrum coordinate of a layer is ``(Δr, λ, IMDB_Δr, IMDB_λ)``
    (pags-spec §3.5; ``full_spectrum_norm`` is its length). This draws its first two coordinates,
    the Ramanujan gap Δr (structure) against the weighted spectral gap λ (weights), one point per
    mask event joined in step order: a hollow circle marks the first event and a filled square the
    last. Δr ≥ 0 (shaded) means the layer meets the Ramanujan bound. Events where a coordinate is
    undefined (NaN: the gate fails, or no weights) are left out of the line, not drawn at 0.

    Parameters
    ----------
    tables : DataFrame, sequence of DataFrame, or mapping label → DataFrame
        One or several run-analysis tables (trajectories per run).
    labels : sequence of str, optional
        Run labels, as in :func:`plot_runs`.
    layers : str or iterable of str
        The row(s) to follow: ``"(network)"`` (default; the network means) or layer names. With
        one table several layers give one trajectory each; with several tables, give one.
    coords : (str, str)
        The metrics on the horizontal and vertical axes (e.g. ``("imdb_ramanujan_gap",
        "imdb_weighted_gap")`` for the IMDB half of the coordinate).
    ax, path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    tables, labels = _tables(tables, labels)
    for i, t in enumerate(tables):
        _check_table(t, "event", f"table {i + 1} ({labels[i]})")
    if len(coords) != 2:
        raise MaskValidationError(f"coords must be two metric names, got {coords!r}")
    pmx, pmy = (_metric(c, tables) for c in coords)
    rows = [layers] if isinstance(layers, str) else list(layers)
    if len(tables) > 1 and len(rows) != 1:
        raise MaskValidationError("with several runs, follow one layer (or the network)")
    for t in tables:
        _select_layers(t, rows)
    fig, ax = _new_axes(ax, figsize=(6.5, 5.5))
    ax.axvline(0, color=GREY, lw=0.8)
    ax.axhline(0, color=GREY, lw=0.8)
    traj = [(t, lab, r) for t, lab in zip(tables, labels, strict=True) for r in rows]
    if len(tables) == 1:  # one run: the network in black, layers in the layer colours
        layer_rows = [r for r in rows if r != NETWORK]
        lc = iter(_layer_colours(len(layer_rows))[0])
        colours = [BLACK if r == NETWORK else next(lc) for r in rows]
    else:
        colours = _cycle(len(traj))
    xs_all, ys_all = [], []
    for (t, lab, r), colour in zip(traj, colours, strict=True):
        _, xv = _series(t, r, pmx.columns[0], "event")
        _, yv = _series(t, r, pmy.columns[0], "event")
        ok = np.isfinite(xv) & np.isfinite(yv)
        name = "network" if r == NETWORK else _short(r)
        if len(tables) > 1:
            name = lab if r == NETWORK else f"{lab}: {name}"
        lw = 2.4 if len(tables) == 1 and r == NETWORK else 1.3
        ax.plot(xv, yv, color=colour, lw=lw, marker=".", ms=4, label=name)
        if ok.any():
            first, last = np.flatnonzero(ok)[[0, -1]]
            ax.plot(xv[first], yv[first], "o", mfc="white", mec=colour, ms=8, mew=1.5)
            ax.plot(xv[last], yv[last], "s", color=colour, ms=7)
            xs_all.append(xv[ok])
            ys_all.append(yv[ok])
    ax.plot([], [], "o", mfc="white", mec=GREY, ms=8, mew=1.5, label="first event")
    ax.plot([], [], "s", color=GREY, ms=7, label="last event")
    if xs_all:  # limits from the data (the shaded half-plane must not stretch them)
        xa, ya = np.concatenate(xs_all), np.concatenate(ys_all)
        for lim, v in ((ax.set_xlim, np.append(xa, 0.0)), (ax.set_ylim, np.append(ya, 0.0))):
            lo, hi = float(v.min()), float(v.max())
            pad = 0.06 * (hi - lo) if hi > lo else 1.0
            lim(lo - pad, hi + pad)
    if pmx.name == "ramanujan_gap":
        x0, x1 = ax.get_xlim()
        if x1 > 0:
            ax.axvspan(max(x0, 0.0), x1, color=OKABE_ITO[2], alpha=0.1, lw=0, zorder=0,
                       label="Δr ≥ 0: meets the Ramanujan bound")  # fmt: skip
            ax.set_xlim(x0, x1)
    ax.set_xlabel(pmx.label)
    ax.set_ylabel(pmy.label)
    n_layers = sum(r != NETWORK for r in rows)
    parts = (["network"] if NETWORK in rows else []) + (
        [f"{n_layers} layer{'s' if n_layers > 1 else ''}"]
        if n_layers > 1
        else [_short(r) for r in rows if r != NETWORK]
    )
    where = " + ".join(parts)
    _title(ax, title or f"full-spectrum plane: {pmx.name} vs {pmy.name} ({where})")
    _legend(ax, loc="best")
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


# ------------------------------------------------------------------------------------------------
# One layer
# ------------------------------------------------------------------------------------------------
def _layer(maskset_or_mask, layer: str | None) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    from .masks import MaskSet, check_layer_mask

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
    from matplotlib.figure import Figure

    from .analysis.graph import biadjacency

    name, mask, _ = _layer(maskset, layer)
    B = biadjacency(mask, conv).to(torch.int64)
    deg_out = B.sum(dim=1).cpu().numpy()
    deg_in = B.sum(dim=0).cpu().numpy()
    fig = Figure(figsize=(9, 4), layout="constrained")
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
        ax.hist(deg, bins=bins, color=colour, alpha=0.85, label=f"{deg.size} nodes")
        active = deg[deg > 0]
        if active.size:
            mean = float(active.mean())
            ax.axvline(mean, color=BLACK, ls="--", lw=1.2, label=f"{sym} = {mean:.3g} (active)")
        n0 = int((deg == 0).sum())
        if n0:
            ax.plot([], [], " ", label=f"{n0} isolated (degree 0)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("number of nodes")
        ax.grid(True, alpha=0.3)
        _legend(ax)
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    fig.suptitle(
        _wrap(title or f"degree distribution of {_short(name)} ({shape}{mode})", 100), fontsize=10
    )
    return _finish(fig, path)


#: The largest stripped biadjacency :func:`plot_spectrum` decomposes (entries).
MAX_SPECTRUM_ENTRIES = 30_000_000


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
    from .analysis.graph import biadjacency, strip_isolated, weighted_biadjacency
    from .analysis.metrics import layer_metrics

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
    ax.plot(idx, sv, ".", color=colour, ms=4, label=f"σᵢ ({sv.size} values)")
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
                   label=f"Ramanujan bound √(d̄_in−1)+√(d̄_out−1) = {bound:.4g}; {gap_text}")  # fmt: skip
    elif sv.size >= 2:
        ax.plot([], [], " ", label=f"λ = σ₁ − σ₂ = {sv[0] - sv[1]:.4g}")
    ax.set_xlabel("index i (singular values in decreasing order)")
    ax.set_ylabel("σᵢ of |W⊙M| (units of |w|)" if weighted else "σᵢ of B (eigenvalue of A)")
    if sv.size > 50:
        ax.set_xscale("log")
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    kind = "weighted spectrum" if weighted else "spectrum"
    _title(ax, title or f"{kind} of {_short(name)} ({shape}{mode}; {sym} marked)")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _finish(fig, path)


#: Default size limits of :func:`plot_bipartite`.
MAX_DRAW_NODES = 400
MAX_DRAW_EDGES = 5_000


def plot_bipartite(
    maskset,
    layer: str | None = None,
    *,
    conv: str = "rolled",
    max_nodes: int = MAX_DRAW_NODES,
    max_edges: int = MAX_DRAW_EDGES,
    ax=None,
    path: str | Path | None = None,
    title: str | None = None,
):
    """Draw a small layer as a bipartite graph: inputs on the left, outputs on the right.

    Each kept entry (or, for a ``rolled`` conv, each channel pair with at least one kept kernel
    entry; the line gets darker with the number of entries) is a line from its input node to its
    output node. Isolated nodes are drawn hollow and grey.

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
        Refuse bigger layers (drawing thousands of lines gives an unreadable figure).
    ax, path, title
        As in :func:`plot_metric`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    MaskValidationError
        When the layer has more nodes or edges than the limits (the message gives its size).
    """
    from matplotlib.collections import LineCollection

    from .analysis.graph import biadjacency

    name, mask, _ = _layer(maskset, layer)
    B = biadjacency(mask, conv).to(torch.int64).cpu().numpy()
    n_out, n_in = B.shape
    o, i = np.nonzero(B)
    if n_out + n_in > max_nodes or o.size > max_edges:
        raise MaskValidationError(
            f"layer {name!r} has {n_in + n_out:,} nodes and {o.size:,} edges ({conv}); "
            f"plot_bipartite draws at most max_nodes={max_nodes:,} and max_edges={max_edges:,} "
            "(raise them to draw it anyway)"
        )
    fig, ax = _new_axes(ax, figsize=(6, max(3.5, min(12, 0.12 * max(n_in, n_out) + 2))))
    top = max(n_in, n_out) - 1

    def ypos(n):
        return np.zeros(1) if n == 1 else np.linspace(0, top, n)

    y_in, y_out = ypos(n_in), ypos(n_out)
    mult = B[o, i]
    alpha = 0.25 + 0.6 * (mult / max(int(mult.max(initial=1)), 1))
    segs = np.stack(
        [np.stack([np.zeros(o.size), y_in[i]], 1), np.stack([np.ones(o.size), y_out[o]], 1)], 1
    )
    colours = np.tile(np.array([0.0, 0.447, 0.698, 1.0]), (o.size, 1))  # Okabe–Ito blue
    colours[:, 3] = np.clip(alpha, 0, 1)
    ax.add_collection(LineCollection(segs, colors=colours, linewidths=0.8, label="kept entry"))
    for xpos, ys, deg, label, colour in (
        (0.0, y_in, B.sum(axis=0), "input node", OKABE_ITO[0]),
        (1.0, y_out, B.sum(axis=1), "output node", OKABE_ITO[4]),
    ):
        act = deg > 0
        ax.scatter(np.full(act.sum(), xpos), ys[act], s=18, color=colour, zorder=3, label=label)
        if (~act).any():
            ax.scatter(np.full((~act).sum(), xpos), ys[~act], s=18, facecolors="white",
                       edgecolors=GREY, zorder=3)  # fmt: skip
    ax.scatter([], [], s=18, facecolors="white", edgecolors=GREY, label="isolated node")
    ax.set_xlim(-0.25, 1.25)
    ax.set_ylim(top + 1, -1)  # node 0 at the top
    ax.set_xticks([0, 1], [f"inputs ({n_in})", f"outputs ({n_out})"])
    ax.set_ylabel("node (index in its side, 0 at the top)")
    ax.set_yticks([])
    shape = "x".join(str(s) for s in mask.shape)
    mode = f", {conv} conv" if mask.ndim > 2 else ""
    note = "; darker = more kernel entries" if conv == "rolled" and mask.ndim > 2 else ""
    _title(
        ax, title or f"{_short(name)} as a bipartite graph ({shape}{mode}, {o.size} edges{note})"
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4, frameon=False)
    return _finish(fig, path)


# ------------------------------------------------------------------------------------------------
# The standard set
# ------------------------------------------------------------------------------------------------
def _has_data(tables, pm: PlotMetric) -> bool:
    return any(
        c in t.columns and np.isfinite(_values(t[c])).any() for t in tables for c in pm.columns
    )


def plot_run(
    table_or_tables,
    out_dir: str | Path,
    metrics: Iterable[str] | str | None = None,
    formats: Iterable[str] = ("png",),
    *,
    labels: Sequence[str] | None = None,
    x: str = "step",
) -> list[Path]:
    """Write the standard figures of one run, or the comparison figures of several runs.

    One table: ``<metric>.<fmt>`` (:func:`plot_metric`, a line per layer and the network) for
    each metric, and ``spectrum-plane.<fmt>`` (:func:`plot_spectrum_plane`, the network's and
    every layer's trajectory when there are at most 6 layers, else the network's). Several tables:
    ``compare-<metric>.<fmt>`` (:func:`plot_runs`) and ``spectrum-plane.<fmt>`` with one
    trajectory per run.

    Parameters
    ----------
    table_or_tables : DataFrame, sequence of DataFrame, or mapping label → DataFrame
        Run-analysis tables.
    out_dir : str or Path
        Folder for the figures (created if missing).
    metrics : iterable of str, optional
        Default :data:`STANDARD_METRICS` (Δr, λ, IMDB terms, full-spectrum norm, density, R_s,
        accuracy), keeping those with at least one defined value. Names given explicitly are
        always drawn (an unknown one raises before anything is written).
    formats : iterable of str
        Any of ``png``, ``svg``, ``pdf``.
    labels : sequence of str, optional
        Run labels (see :func:`plot_runs`).
    x : {"step", "epoch", "event"}
        The horizontal axis.

    Returns
    -------
    list of pathlib.Path
        The files written, in order.
    """
    tables, labels = _tables(table_or_tables, labels)
    for i, t in enumerate(tables):
        _check_table(t, x, f"table {i + 1} ({labels[i]})")
    formats = [formats] if isinstance(formats, str) else list(formats)
    for fmt in formats:
        if fmt not in FORMATS:
            raise UnknownNameError("figure format", fmt, FORMATS)
    if metrics is None:
        chosen = [
            m
            for m in STANDARD_METRICS
            if _has_columns(tables, m) and _has_data(tables, PLOT_METRICS[m])
        ]
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        chosen = [_metric(m, tables).name for m in names]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from .errors import MaskFileError

        raise MaskFileError(out, f"cannot create the folder ({e.strerror or e})") from None
    written: list[Path] = []

    def emit(fig, stem: str) -> None:
        for fmt in formats:
            written.append(save_figure(fig, out / f"{stem}.{fmt}"))

    single = len(tables) == 1
    for m in chosen:
        if single:
            emit(plot_metric(tables[0], m, x=x), _safe(m))
        else:
            emit(plot_runs(tables, m, labels=labels, x=x), f"compare-{_safe(m)}")
    coords = ("ramanujan_gap", "weighted_spectral_gap")
    if all(_has_columns(tables, c) for c in coords) and all(
        _has_data(tables, PLOT_METRICS[c]) for c in coords
    ):
        if single:
            names = _layer_order(tables[0])
            rows = [NETWORK, *names] if len(names) <= 6 else [NETWORK]
            if not (tables[0]["layer"] == NETWORK).any():
                rows = names
            emit(plot_spectrum_plane(tables, labels=labels, layers=rows), "spectrum-plane")
        else:
            emit(plot_spectrum_plane(tables, labels=labels), "spectrum-plane")
    return written


def _has_columns(tables, metric: str) -> bool:
    pm = PLOT_METRICS[metric]
    return all(any(c in t.columns for c in pm.columns) for t in tables)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
