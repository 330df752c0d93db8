r"""Figures of mask topology: metrics over training, the full-spectrum plane, degrees, spectra.

Every function returns a :class:`matplotlib.figure.Figure` (built without ``pyplot``, so no global
state and no display is involved; Jupyter shows the returned figure) and, given ``path``, also
writes it: the format comes from the suffix (``.png``, ``.svg`` or ``.pdf``; vector formats keep
text as text in PDF and as glyph outlines in SVG) and the file is written atomically. Functions
drawing into one set of axes also accept ``ax`` to draw into an existing figure.

All figures share one style (:data:`STYLE`, applied while drawing and saving, never globally):
labelled axes with units, no top/right spines, a light grid, the legend outside the axes so that it
never hides data. A series with one or two defined points is drawn as markers only (a line
between two points would suggest values in between); the legend shows each series with the marker
and line style it is drawn with, and series with no defined value are named in the legend as not
drawn. ``title`` is the default title when ``None``, no title when ``""``, and otherwise replaces
it, with ``{}`` standing for the default (``title="{} (ResNet-18, RigL)"``). Default titles say
what is drawn, not which run folder it came from.

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

import functools
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
    "STYLE",
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
    "epoch": "epoch (passes over the training set)",
    "event": "mask event (index)",
}
_DPI = 150
#: The matplotlib settings every figure is drawn and saved with (a ``rc_context``, never global).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.solid_capstyle": "round",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "pdf.fonttype": 42,  # TrueType: text stays text (selectable, editable) in PDF
    "ps.fonttype": 42,
    "svg.fonttype": "path",  # glyph outlines: the SVG looks the same without the fonts
    "svg.hashsalt": "masktopo",  # fixed ids: the same figure gives the same bytes
}
#: Markers of the layers (with the Okabe–Ito colours), so lines stay apart in greyscale too.
_MARKERS = ("o", "s", "^", "D", "v", "P")
#: Display names and styles of the event scalars (train and validation told apart by colour,
#: line style and marker, so two series with equal values stay visible).
_SCALAR_STYLE = {
    "train_acc": ("training", "-", "o", OKABE_ITO[3]),
    "val_acc": ("validation", "--", "s", OKABE_ITO[4]),
    "train_loss": ("training", "-", "o", OKABE_ITO[3]),
    "val_loss": ("validation", "--", "s", OKABE_ITO[4]),
}


def _styled(fn):
    """Run ``fn`` inside :data:`STYLE` (rc settings are read while artists are made and saved)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


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
        with matplotlib.rc_context(STYLE):
            fig.savefig(f, format=fmt, dpi=_DPI, metadata=meta[fmt])

    atomic_write(path, write)
    return path


def _finish(fig, path) -> Any:
    if getattr(fig, "_masktopo_layout", False):
        # Lay the figure out once and keep that layout: constrained layout with a legend outside
        # the axes moves them a little on every draw, so each save would differ in its last digits.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    if path is not None:
        save_figure(fig, path)
    return fig


def _new_figure(figsize):
    """A figure of our own (laid out once by :func:`_finish`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    fig._masktopo_layout = True
    return fig


def _new_axes(ax, figsize=(7.5, 4.5)):
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
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

    if layer == NETWORK and column == "is_ramanujan" and "ramanujan_fraction" in table.columns:
        column = "ramanujan_fraction"  # the network row's fraction of Ramanujan layers

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
@_styled
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

    Mask metrics are step lines (the mask only changes at events, so the value holds until the
    next one); weighted metrics and event scalars are lines between events. Layers are told apart
    by colour and marker; a series with one or two defined points is drawn as markers only, and a
    layer with no defined value at all is named in the legend as not drawn.

    Parameters
    ----------
    table : pandas.DataFrame
        A run-analysis table (module docstring).
    metric : str
        A name of :data:`PLOT_METRICS` (every analysis metric, ``R_s``, ``accuracy``, ``loss``,
        ``train_acc``, ...) or another numeric column of the table. Event scalars (``R_s``,
        accuracies, losses) are drawn once per event: training solid with circles (blue),
        validation dashed with hollow squares (vermillion).
    x : {"step", "epoch", "event"}
        The horizontal axis; it spans every event of the table, so the figures of one run align.
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
        ``None``: the default title (what is drawn); ``""``: no title; otherwise the title, with
        ``{}`` standing for the default one.

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
    missing: list[str] = []
    legend = True
    if pm.event_scalar:
        cols = [c for c in pm.columns if c in table.columns]
        for col in cols:
            name, ls, marker, colour = _SCALAR_STYLE.get(col, (col, "-", "o", BLACK))
            if len(cols) == 1:
                colour = BLACK
            xs, ys = _scalar_series(table, col, x)
            hollow = ls == "--"
            if not _draw_series(ax, xs, ys, colour=colour, label=name, ls=ls, marker=marker,
                                lw=1.8, hollow=hollow, zorder=4 if hollow else 3):  # fmt: skip
                missing.append(name)
        legend = len(cols) > 1 or bool(missing)
        what = ""
    else:
        # A mask metric is constant between two events (the mask only changes at events): a
        # step line; a weighted one changes with the weights in between: a line between events.
        draw = "default" if pm.weighted else "steps-post"
        chosen = _select_layers(table, layers)
        colours, cmap = _layer_colours(len(chosen))
        for k, (name, colour) in enumerate(zip(chosen, colours, strict=True)):
            xs, ys = _series(table, name, pm.columns[0], x)
            label = _key(_short(name)) if cmap is None else f"_{name}"  # "_": colour bar
            marker = _MARKERS[k % len(_MARKERS)] if cmap is None else "."
            if not _draw_series(ax, xs, ys, colour=colour, label=label, marker=marker, lw=1.2,
                                ms=3.5 if cmap is None else 3, drawstyle=draw):  # fmt: skip
                missing.append(_short(name))
        if network and (table["layer"] == NETWORK).any():
            xs, ys = _series(table, NETWORK, pm.columns[0], x)
            if not _draw_series(ax, xs, ys, colour=BLACK, label="network", lw=2.4, ms=4,
                                drawstyle=draw, zorder=5):  # fmt: skip
                missing.append("network")
        if cmap is not None:
            _layer_colourbar(fig, ax, chosen, colours)
        what = " per layer" if chosen else ""
    _x_limits(ax, [table], x)
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(pm.label)
    _title(ax, title, f"{pm.title}{what}")
    _not_drawn(ax, missing)
    if legend:
        _legend(ax)
    return _finish(fig, path)


def _draw_series(
    ax,
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    colour,
    label: str,
    ls: str = "-",
    marker: str = "o",
    lw: float = 1.4,
    ms: float = 3.5,
    drawstyle: str = "default",
    hollow: bool = False,
    zorder: float = 3,
) -> bool:
    """One series: a line with markers, or markers only for one or two defined points.

    NaN values stay in the line's data (gaps); the legend entry is the drawn artist itself, so it
    shows the same marker and line style. Returns False (nothing drawn) when no value is defined.
    """
    ok = np.isfinite(xs) & np.isfinite(ys)
    n = int(ok.sum())
    if n == 0:
        return False
    face = "none" if hollow else colour  # hollow: a filled mark under it shows through
    if n <= 2:
        ax.plot(xs[ok], ys[ok], linestyle="none", marker=marker, ms=max(ms + 3, 6.5),
                mfc=face, mec=colour, mew=1.4, color=colour, label=label, zorder=zorder)  # fmt: skip
    else:
        small = n > 60  # long series: the line carries the data, markers only hint at events
        ax.plot(xs, ys, linestyle=ls, lw=lw, marker=marker, ms=ms * (0.6 if small else 1),
                mfc=face, mec=colour, mew=0.9, color=colour, label=label, drawstyle=drawstyle,
                zorder=zorder)  # fmt: skip
    return True


def _key(text: str) -> str:
    """A legend label wrapped to 30 characters (long run names would squeeze the axes)."""
    return _wrap(text, 30)


def _not_drawn(ax, names: list[str]) -> None:
    """Name the series with no defined value in the legend (a text entry, no mark)."""
    if names:
        text = _wrap("not drawn (no defined value): " + ", ".join(names), 34)
        ax.plot([], [], " ", label=text)


def _x_limits(ax, tables, x: str) -> None:
    """The horizontal axis spans every event of the tables (figures of one run align)."""
    vals = np.concatenate([_values(t[x]) for t in tables])
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = float(vals.min()), float(vals.max())
        pad = 0.03 * (hi - lo) if hi > lo else 0.5
        ax.set_xlim(lo - pad, hi + pad)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _title_text(title: str | None, default: str) -> str:
    """The title to draw: ``None`` the default, ``""`` none, ``{}`` in a title the default."""
    if title is None:
        return default
    return title.replace("{}", default)


def _title(ax, title: str | None, default: str) -> None:
    """A title wrapped to the axes' width (about 11 characters per inch at 10 pt)."""
    text = _title_text(title, default)
    if not text:
        return
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(_wrap(text, max(30, int(width * 11))))


def _legend(ax, *, outside: bool = True, **kw) -> None:
    """The legend, outside the axes on the right (it never hides data), or where ``kw`` says."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside and "loc" not in kw:
        kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.legend(**kw)


@_styled
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
    """One metric against training step for several runs, one colour (and marker) per run.

    Parameters
    ----------
    tables : sequence of DataFrame, or mapping label → DataFrame
        Run-analysis tables.
    metric : str
        As in :func:`plot_metric`. ``accuracy`` and ``loss`` draw training solid and validation
        dashed with hollow markers, in the run's colour.
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
    draw = "default" if pm.event_scalar or pm.weighted else "steps-post"
    missing: list[str] = []
    for k, (t, label, colour) in enumerate(zip(tables, labels, colours, strict=True)):
        marker = _MARKERS[k % len(_MARKERS)]
        for col, ls in zip(pm.columns, ("-", "--"), strict=False):
            if col not in t.columns:
                continue
            if pm.event_scalar:
                xs, ys = _scalar_series(t, col, x)
            else:
                xs, ys = _series(t, layer, col, x)
            several = len(pm.columns) > 1
            name = _key(f"{label}: {_SCALAR_STYLE.get(col, (col,))[0]}" if several else label)
            if not _draw_series(ax, xs, ys, colour=colour, label=name, ls=ls, marker=marker,
                                lw=1.6, hollow=ls == "--", drawstyle=draw):  # fmt: skip
                missing.append(name)
    _x_limits(ax, tables, x)
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(pm.label)
    where = "" if pm.event_scalar else (" (network)" if layer == NETWORK else f" ({layer})")
    _title(ax, title, f"{pm.title}{where}: {len(tables)} run{'s' if len(tables) > 1 else ''}")
    _not_drawn(ax, missing)
    _legend(ax)
    return _finish(fig, path)


def _cycle(n: int) -> list:
    """Okabe–Ito, then black, repeating with a darker shade when more runs than colours."""
    base = [*OKABE_ITO, BLACK]
    return [base[i % len(base)] for i in range(n)]


#: Short names of the full-spectrum coordinates (for titles).
_SYMBOLS = {
    "ramanujan_gap": "Δr",
    "weighted_spectral_gap": "λ",
    "imdb_ramanujan_gap": "IMDB Δr",
    "imdb_weighted_gap": "IMDB λ",
}


@_styled
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
    undefined (NaN: the gate fails, or no weights) are left out of the line, not drawn at 0; a
    trajectory with no defined point is named in the legend as not drawn.

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
    fig, ax = _new_axes(ax, figsize=(7.0, 5.0))
    ax.axvline(0, color=GREY, lw=0.8)
    ax.axhline(0, color=GREY, lw=0.8)
    traj = [(t, lab, r) for t, lab in zip(tables, labels, strict=True) for r in rows]
    if len(tables) == 1:  # one run: the network in black, layers in the layer colours
        layer_rows = [r for r in rows if r != NETWORK]
        lc = iter(_layer_colours(len(layer_rows))[0])
        colours = [BLACK if r == NETWORK else next(lc) for r in rows]
    else:
        colours = _cycle(len(traj))
    xs_all, ys_all, missing = [], [], []
    for (t, lab, r), colour in zip(traj, colours, strict=True):
        _, xv = _series(t, r, pmx.columns[0], "event")
        _, yv = _series(t, r, pmy.columns[0], "event")
        ok = np.isfinite(xv) & np.isfinite(yv)
        name = "network" if r == NETWORK else _short(r)
        if len(tables) > 1:
            name = lab if r == NETWORK else f"{lab}: {name}"
        name = _key(name)
        if not ok.any():
            missing.append(name)
            continue
        lw = 2.4 if len(tables) == 1 and r == NETWORK else 1.3
        if ok.sum() <= 2:  # markers only (and the first/last marks below)
            ax.plot(xv[ok], yv[ok], linestyle="none", marker=".", ms=6, color=colour, label=name)
        else:
            ax.plot(xv, yv, color=colour, lw=lw, marker=".", ms=4, label=name)
        first, last = np.flatnonzero(ok)[[0, -1]]
        ax.plot(xv[first], yv[first], "o", mfc="white", mec=colour, ms=8, mew=1.5, zorder=4)
        ax.plot(xv[last], yv[last], "s", color=colour, ms=7, zorder=4)
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
                       label="Δr ≥ 0: meets the\nRamanujan bound")  # fmt: skip
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
    if len(tables) > 1:
        where += f", {len(tables)} runs"
    sx, sy = (_SYMBOLS.get(p.name, p.name) for p in (pmx, pmy))
    _title(ax, title, f"full-spectrum plane: {sy} against {sx} ({where})")
    _not_drawn(ax, missing)
    _legend(ax)
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

    from .analysis.graph import biadjacency

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
    from .analysis.graph import biadjacency

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
    title: str | None = None,
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
    title : str, optional
        The title of every figure, as in :func:`plot_metric`: ``""`` draws none (for a paper,
        where the caption says what is shown), ``"{} (ResNet-18)"`` adds to each default title.

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
            emit(plot_metric(tables[0], m, x=x, title=title), _safe(m))
        else:
            emit(plot_runs(tables, m, labels=labels, x=x, title=title), f"compare-{_safe(m)}")
    coords = ("ramanujan_gap", "weighted_spectral_gap")
    if all(_has_columns(tables, c) for c in coords) and all(
        _has_data(tables, PLOT_METRICS[c]) for c in coords
    ):
        if single:
            names = _layer_order(tables[0])
            rows = [NETWORK, *names] if len(names) <= 6 else [NETWORK]
            if not (tables[0]["layer"] == NETWORK).any():
                rows = names
            fig = plot_spectrum_plane(tables, labels=labels, layers=rows, title=title)
        else:
            fig = plot_spectrum_plane(tables, labels=labels, title=title)
        emit(fig, "spectrum-plane")
    return written


def _has_columns(tables, metric: str) -> bool:
    pm = PLOT_METRICS[metric]
    return all(any(c in t.columns for c in pm.columns) for t in tables)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
