"""Figures over training: one metric (:func:`plot_metric`), several runs (:func:`plot_runs`), the
full-spectrum plane (:func:`plot_spectrum_plane`) and the standard set (:func:`plot_run`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import MaskValidationError, UnknownNameError
from .series import (
    NETWORK,
    PLOT_METRICS,
    STANDARD_METRICS,
    PlotMetric,
    _check_table,
    _layer_colourbar,
    _layer_colours,
    _layer_order,
    _metric,
    _scalar_series,
    _select_layers,
    _series,
    _short,
    _tables,
    _values,
)
from .style import (
    BLACK,
    FORMATS,
    GREY,
    OKABE_ITO,
    _finish,
    _legend,
    _new_axes,
    _styled,
    _title,
    _wrap,
    save_figure,
)

#: The axis label of each x axis (the names: :data:`masktopo.options.X_AXES`).
_X_LABELS = {
    "step": "training step (optimizer steps)",
    "epoch": "epoch (passes over the training set)",
    "event": "mask event (index)",
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
        from ..errors import MaskFileError

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
