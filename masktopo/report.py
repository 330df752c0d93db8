"""One self-contained static HTML page describing one or several training runs.

:func:`write_report` analyzes each run directory (:func:`masktopo.analysis.runs.analyze_run`,
through its incremental cache) and writes a single HTML file that opens in a browser without a
server and refers to no other file: the figures are embedded as ``data:`` URIs (SVG by default, or
PNG), the style sheet is inline, and the only links are ``#fragments`` within the page. Every text
taken from a run (names, labels, config values, error messages) is HTML-escaped. The layout fits
a phone as well as a laptop: long names wrap, tables scroll inside their own box and figures
shrink to the column, so the page is never wider than the window.

For each run the page shows:

* an overview (method, model, dataset, density, steps, events) and any **problems**: event mask
  files that are missing or corrupt (those events are left out of everything else), an unreadable
  ``summary.json``, a missing or unusable layer graph;
* the final metrics and per-epoch history of ``summary.json``;
* the figures of :func:`masktopo.plots.plot_run` (metrics against training step, the full-spectrum
  plane Δr–λ);
* the per-layer metrics of the last analyzed event and the network metrics of every analyzed event;
* the whole-network path analysis of the last analyzed event's masks
  (:func:`masktopo.analysis.paths.analyze_paths` on ``run.json["graph"]``): effective density,
  dead units and ineffective weights [ZP24]_;
* the resolved training configuration, the other run metadata and the layers.

A PAGS output folder (``masktopo pags --out``) has no mask events: its page shows the final
metrics of its ``summary.json``, the network score of every candidate
(:func:`masktopo.pags.plots.plot_pags`) and the base and best masks' Δr, λ, IMDB and
full-spectrum norm per layer and for the network, analyzed with the run's graph options. A
search or pruning-benchmark folder shows its ``summary.json`` and ``masktopo plot``'s figures
(:mod:`masktopo.search.plots`); a prune run shows its figures against the sparsity
(:mod:`masktopo.prune.plots`) instead of a trajectory over steps (its events are independent
solves), and its per-event tables.

Several runs add a comparison section first: the final metrics side by side, the configuration
keys whose values differ, and the comparison figures (one line per run).

References
----------
.. [ZP24] X. Zhang, V. Papyan, "Sparsest Models Elude Pruning: An Exposé of Pruning's Current
   Capabilities", ICML 2024.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .checks import is_number
from .errors import MaskFileError, MaskTopoError, UnknownNameError
from .options import X_AXES
from .runs.layout import SUMMARY_FILE

__all__ = ["FIGURE_FORMATS", "build_report", "write_report"]

#: Formats the figures can be embedded in.
FIGURE_FORMATS = ("svg", "png")
NETWORK = "(network)"
_MIME = {"svg": "image/svg+xml", "png": "image/png"}

#: Columns of the per-layer table (those present with a defined value are shown).
LAYER_COLUMNS = (
    "layer",
    "layer_kind",
    "shape",
    "density",
    "n_edges",
    "n_out_active",
    "n_in_active",
    "mu0",
    "mu_hat",
    "ramanujan_bound",
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
    "normalized_spectral_gap",
    "reason",
)
#: Columns of the network-over-events table.
NETWORK_COLUMNS = (
    "event",
    "step",
    "epoch",
    "event_kind",
    "density",
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
    "ramanujan_fraction",
    "R_s",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
)
_OVERVIEW = ("method", "model", "dataset", "density", "epochs", "batch_size", "optimizer", "seed")

#: The page's style sheet. Narrow screens: long names wrap, tables scroll inside their own box,
#: figures shrink to the column's width; nothing makes the page wider than the screen.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;color:#1a1a1a;background:#fff;line-height:1.45;overflow-wrap:break-word;
-webkit-text-size-adjust:100%;text-size-adjust:100%}
header,main,footer,nav{max-width:1200px;margin:0 auto;padding:0 1.2rem}
header{padding-top:1rem}h1{font-size:1.6rem;margin:.4rem 0}
h2{font-size:1.3rem;border-bottom:2px solid #0072B2;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.4rem}nav ul{padding-left:1.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f2f2f2;overflow-wrap:anywhere;min-width:5.5em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.na{color:#888;text-align:center}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:.8rem 0;display:inline-block;vertical-align:top;max-width:100%}
img{max-width:100%;height:auto;box-sizing:border-box}
figure img{width:560px;border:1px solid #eee}
figcaption{font-size:.8rem;color:#444;max-width:560px}
.problems{background:#fff4e5;border-left:4px solid #D55E00;padding:.4rem .8rem}
.note{color:#555;font-size:.9rem}code{font-size:.85rem}
details summary{cursor:pointer;font-weight:600;margin:.4rem 0}
footer{color:#666;font-size:.8rem;padding:2rem 1.2rem}
@media (max-width:600px){header,main,footer,nav{padding:0 .8rem}h1{font-size:1.3rem}
h2{font-size:1.15rem}figure{margin:.6rem 0}}
"""


# ------------------------------------------------------------------------------------------------
# HTML helpers
# ------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def _is_missing(v: Any) -> bool:
    """None, NaN, or a pandas missing value (NA, NaT)."""
    if v is None:
        return True
    if isinstance(v, numbers.Real):
        return math.isnan(float(v))
    return type(v).__name__ in ("NAType", "NaTType")


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and type(v).__module__ == "numpy":
        return v.item()
    return v


def _fmt(v: Any) -> str:
    """Display text of a value: numbers with 6 significant digits, JSON for containers."""
    v = _plain(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        v = float(v)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return format(v, ".6g")
    if v is None:
        return "null"
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


def _cell(v: Any) -> str:
    v = _plain(v)
    if _is_missing(v):
        return '<td class="na" title="undefined">—</td>'
    num = is_number(v)
    return f'<td class="num">{_e(_fmt(v))}</td>' if num else f"<td>{_e(_fmt(v))}</td>"


def _table(header: Sequence[str], rows: Iterable[Sequence], caption: str | None = None) -> str:
    parts = ['<div class="scroll"><table>']
    if caption:
        parts.append(f"<caption>{_e(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    """A key/value table; None (JSON null: a setting left unset) is shown as ``null``."""
    return _table(("key", "value"), [(k, "null" if v is None else v) for k, v in items])


def _frame_table(df, columns: Sequence[str], *, keep_empty: Sequence[str] = ()) -> str:
    """The given columns of ``df`` that exist and have at least one defined value."""
    cols = [
        c
        for c in columns
        if c in df.columns and (c in keep_empty or any(not _is_missing(v) for v in df[c]))
    ]
    rows = df[cols].itertuples(index=False, name=None)
    return _table(cols, rows)


def _figure(data: bytes, fmt: str, caption: str) -> str:
    uri = f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
    return (
        f'<figure><img src="{uri}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------
@dataclass
class _RunReport:
    path: Path
    label: str
    run: Any  # masktopo.runs.Run
    table: Any  # run-analysis DataFrame
    summary: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    final_event: int | None = None
    paths: Any = None  # PathAnalysis of the final event
    figures: list[str] = field(default_factory=list)
    extra: str = ""  # HTML of a result folder's own section (PAGS, search, prune)


def _read_summary(r: _RunReport) -> None:
    try:
        r.summary = r.run.checked_summary()
    except MaskFileError as exc:
        r.problems.append(str(exc))
        return
    if r.summary is None:
        r.notes.append(
            f"no {SUMMARY_FILE}: the run has not finished (or was stopped); the tables below end "
            "at its last recorded mask event"
        )


#: Metrics of a PAGS folder's base and best masks shown side by side.
PAGS_COLUMNS = ("ramanujan_gap", "weighted_spectral_gap", "imdb_ramanujan_gap",
                "full_spectrum_norm")  # fmt: skip


def _pags(r: _RunReport, folder: Path, fmt: str) -> None:
    """A PAGS output folder: its score figure (:func:`masktopo.pags.plots.plot_pags`) and the
    base and best masks' metrics per layer, analyzed with the run's graph options."""
    import pandas as pd

    from .analysis.metrics import aggregate, analyze
    from .inputs import load
    from .pags.plots import plot_pags

    parts = ["<h3>PAGS: candidates</h3>"]
    try:
        for f in plot_pags(r.path, folder, formats=(fmt,), title=""):
            parts.append(_figure(f.read_bytes(), fmt, "network score of every candidate, of the "
                                 "best mask so far and of the base mask; layers accepted from "
                                 "each candidate"))  # fmt: skip
    except MaskTopoError as exc:
        r.problems.append(f"PAGS figure: {' '.join(str(exc).split())}")
    cfg = r.run.config.get("config") or {}
    opts = {k: cfg[k] for k in ("conv", "gate", "imdb") if isinstance(cfg.get(k), str)}
    tables = {}
    for name in ("base", "best"):
        f = r.path / f"{name}.safetensors"
        if not f.is_file():
            r.notes.append(
                f"no {f.name} (written when the PAGS run ends): its metrics are not shown"
            )
            continue
        try:
            df = analyze(load(f), **opts)
        except MaskTopoError as exc:
            r.problems.append(f"{f.name}: {' '.join(str(exc).split())}")
            continue
        net = {"layer": NETWORK, **aggregate(df)}
        tables[name] = pd.concat([df, pd.DataFrame([net])], ignore_index=True)
    if len(tables) == 2:
        cols = [c for c in PAGS_COLUMNS if c in tables["base"] and c in tables["best"]]
        head = ["layer", *(f"{c} ({n})" for c in cols for n in ("base", "best"))]
        rows = [[b["layer"], *(v for c in cols for v in (b[c], e[c]))]
                for (_, b), (_, e) in zip(tables["base"].iterrows(), tables["best"].iterrows(),
                                          strict=True)]  # fmt: skip
        parts.append("<h3>PAGS: base and best masks, per layer</h3>")
        parts.append(_table(head, rows))
    r.extra = "".join(parts)


def _folder_figures(r: _RunReport, entry, folder: Path, fmt: str) -> None:
    """The figures of a result folder with figures of its own (a search, pruning-benchmark or
    prune folder: ``masktopo plot``'s, ``entry`` of :mod:`masktopo.folder_figures`), in their
    own section."""
    from . import folder_figures

    kind = r.run.kind
    try:
        files = folder_figures.draw(entry, r.path, folder, formats=(fmt,), title="")
    except MaskTopoError as exc:
        r.problems.append(f"{kind} figures: {' '.join(str(exc).split())}")
        return
    r.extra = f"<h3>{_e(entry.headings[kind].capitalize())}</h3>" + "".join(
        _figure(f.read_bytes(), fmt, f.stem.replace("-", " ")) for f in files
    )


def _analyze(r: _RunReport, *, every, conv, cache, progress) -> None:
    from .analysis.runs import analyze_run

    if r.run.kind == "pags":  # no mask events: its masks are base.safetensors, best.safetensors
        return

    df = analyze_run(r.path, every=every, conv=conv, cache=cache, progress=progress)
    r.table = df
    for bad in df.attrs.get("bad_events", []):
        r.problems.append(f"event {bad['event']} left out: {' '.join(str(bad['problem']).split())}")
    for skipped in df.attrs.get("skipped_lines", []):
        r.problems.append(f"line {skipped['line']} of the event log skipped: {skipped['problem']}")
    n = r.run.n_events
    if n == 0:
        r.notes.append(r.run.no_events_reason())
    elif df.empty:
        r.problems.append("no event could be analyzed: every selected event file is bad")
    else:
        r.final_event = int(df["event"].max())
        last = r.run.events[-1]["event"]
        if r.final_event != last:
            r.notes.append(
                f"the last event ({last}) could not be read; the final tables use event "
                f"{r.final_event}, the last intact one"
            )


def _analyze_paths(r: _RunReport) -> None:
    from .analysis.paths import analyze_paths

    if r.run.kind == "pags":
        return
    graph = r.run.config.get("graph")
    if graph is None:
        why = r.run.config.get("graph_error")
        r.notes.append("run.json has no layer graph" + (f" ({why})" if why else "")
                       + ": the whole-network path analysis is skipped")  # fmt: skip
        return
    if r.final_event is None:
        return
    try:
        ms = r.run.load(r.final_event, weights=False)
        r.paths = analyze_paths(ms, graph)
    except MaskTopoError as exc:
        r.problems.append(f"path analysis of event {r.final_event}: {' '.join(str(exc).split())}")


def _draw(tables, labels, folder: Path, fmt: str, x: str) -> list[str]:
    """The standard figures of ``tables`` (one run, or a comparison) as ``<figure>`` elements."""
    from .errors import MaskValidationError
    from .plots import PLOT_METRICS, plot_run

    try:
        files = plot_run(tables, folder, None, (fmt,), labels=labels, x=x)
    except MaskValidationError as exc:
        return [f'<p class="note">No figures: {_e(exc)}</p>']
    out = []
    for f in files:
        name = f.stem
        what = name[len("compare-") :] if name.startswith("compare-") else name
        if what == "spectrum-plane":
            caption = "full-spectrum plane: Δr (structure) against λ (weights)"
        else:
            pm = PLOT_METRICS.get(what)
            caption = f"{pm.title if pm else what} against training {x}"
            if len(tables) > 1:
                caption += " (network of each run)"
        out.append(_figure(f.read_bytes(), fmt, caption))
        f.unlink()
    return out


def _label_of(path: Path) -> str:
    return path.resolve().name or str(path)


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------
def _final_metrics(r: _RunReport) -> dict:
    """The summary's ``final`` entry; for a result folder without one (a search), its scalar
    entries."""
    if r.summary is None:
        return {}
    if isinstance(r.summary.get("final"), dict):
        return dict(r.summary["final"])
    return {k: v for k, v in r.summary.items()
            if v is None or isinstance(v, (bool, int, float, str))}  # fmt: skip


def _overview(r: _RunReport) -> str:
    cfg = r.run.config.get("config") or {}
    items = [("run directory", str(r.path))]
    items += [(k, cfg[k]) for k in _OVERVIEW if k in cfg]
    s = r.summary or {}
    for key in ("steps", "epochs", "density"):
        if key in s:
            items.append((f"{key} (done)" if key != "density" else "final density", s[key]))
    items.append(("mask events", r.run.n_events))
    if r.table is not None and not r.table.empty:
        items.append(("events analyzed", len(r.table.attrs.get("events", []))))
    items.append(("masked layers", len(r.run.config.get("layers", []))))
    return _kv_table(items)


def _problems(r: _RunReport) -> str:
    parts = []
    if r.problems:
        parts.append('<div class="problems"><strong>Problems</strong><ul>')
        parts += [f"<li>{_e(p)}</li>" for p in r.problems]
        parts.append("</ul></div>")
    parts += [f'<p class="note">{_e(n)}</p>' for n in r.notes]
    return "".join(parts)


def _summary_section(r: _RunReport) -> str:
    if r.summary is None:
        return ""
    parts = [f"<h3>Final metrics ({SUMMARY_FILE})</h3>"]
    final = _final_metrics(r)
    parts.append(_kv_table(final.items()) if final else '<p class="note">none recorded</p>')
    history = r.summary.get("history")
    if isinstance(history, list) and history and all(isinstance(h, dict) for h in history):
        cols = list(dict.fromkeys(k for h in history for k in h))
        rows = [[h.get(c) for c in cols] for h in history]
        parts.append("<details><summary>History (one row per epoch)</summary>")
        parts.append(_table(cols, rows) + "</details>")
    return "".join(parts)


def _layer_section(r: _RunReport) -> str:
    if r.final_event is None:
        return ""
    df = r.table
    rows = df[(df["event"] == r.final_event) & (df["layer"] != NETWORK)]
    head = f"<h3>Layers at the last analyzed event ({r.final_event}, step {_fmt(rows['step'].iloc[0])})</h3>"
    if "shape" in rows:  # [out, in, *kernel] as 300x784
        rows = rows.assign(shape=[_shape_text(v) for v in rows["shape"]])
    return head + _frame_table(rows, LAYER_COLUMNS, keep_empty=("layer",))


def _shape_text(v) -> str:
    """A layer shape (a list of ints, or already a string) as ``64x3x3x3``."""
    if isinstance(v, str):
        return v
    try:
        return "x".join(str(int(x)) for x in v)
    except TypeError:
        return _fmt(v)


def _network_section(r: _RunReport) -> str:
    if r.final_event is None:
        return ""
    df = r.table
    net = df[df["layer"] == NETWORK]
    return (
        "<h3>Network metrics over training</h3><details open><summary>"
        f"{len(net)} analyzed event(s)</summary>"
        + _frame_table(net, NETWORK_COLUMNS, keep_empty=("event",))
        + "</details>"
    )


def _paths_section(r: _RunReport) -> str:
    p = r.paths
    if p is None:
        return ""
    hidden = sum(
        s["units"]
        for i, s in enumerate(p.graph["sites"])
        if i not in (p.graph["input"], p.graph["output"])
    )
    text = (
        f"Masks of event {r.final_event}: density {_fmt(p.density)}, effective density "
        f"{_fmt(p.effective_density)}; {p.n_ineffective:,} of {p.n_kept:,} kept weights are "
        f"ineffective (on no input→output path); {p.n_dead_units:,} of {hidden:,} hidden units "
        "are dead (no path from the input or to the output)."
    )
    df = p.to_frame()
    cols = ("layer", "kind", "shape", "masked", "numel", "kept", "effective", "ineffective",
            "density", "effective_density", "out_units", "dead_out_units")  # fmt: skip
    return f"<h3>Whole-network paths (final masks)</h3><p>{_e(text)}</p>" + _table(
        cols, df[list(cols)].itertuples(index=False, name=None)
    )


def _config_section(r: _RunReport) -> str:
    meta = r.run.config
    cfg = meta.get("config") or {}
    parts = ["<h3>Configuration (resolved)</h3>"]
    parts.append(_kv_table(cfg.items()) if cfg else '<p class="note">run.json has no config</p>')
    skip = {"config", "layers", "graph"}
    other = [(k, v) for k, v in meta.items() if k not in skip]
    parts.append("<details><summary>Other run metadata (run.json)</summary>")
    parts.append(_kv_table(other) + "</details>")
    layers = meta.get("layers") or []
    parts.append(f"<details><summary>Masked layers ({len(layers)})</summary>")
    rows = [(d.get("name"), d.get("kind"), "x".join(map(str, d.get("shape", [])))) for d in layers]
    parts.append(_table(("name", "kind", "shape"), rows) + "</details>")
    return "".join(parts)


def _run_section(r: _RunReport, index: int) -> str:
    parts = [
        f'<section id="run-{index}"><h2>{_e(r.label)}</h2>',
        _overview(r),
        _problems(r),
        _summary_section(r),
    ]
    if r.figures:
        parts.append("<h3>Topology over training</h3>" + "".join(r.figures))
    parts.append(r.extra)
    parts += [_layer_section(r), _network_section(r), _paths_section(r), _config_section(r)]
    parts.append("</section>")
    return "".join(parts)


def _compare_section(reports: list[_RunReport], figures: list[str]) -> str:
    labels = [r.label for r in reports]
    parts = ['<section id="compare"><h2>Comparison</h2>']
    finals = [_final_metrics(r) for r in reports]
    keys = list(dict.fromkeys(k for f in finals for k in f))
    if keys:
        parts.append("<h3>Final metrics</h3>")
        parts.append(_table(["metric", *labels], [[k, *(f.get(k) for f in finals)] for k in keys]))
    cfgs = [r.run.config.get("config") or {} for r in reports]
    ckeys = list(dict.fromkeys(k for c in cfgs for k in c))
    differ = [
        k
        for k in ckeys
        if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in cfgs}) > 1
    ]
    parts.append("<h3>Configuration differences</h3>")
    if differ:
        parts.append(_table(["key", *labels], [[k, *(c.get(k) for c in cfgs)] for k in differ]))
    else:
        parts.append('<p class="note">the runs have the same configuration</p>')
    if figures:
        parts.append("<h3>Topology over training</h3>" + "".join(figures))
    parts.append("</section>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def _refuse_sweep(path: Path) -> None:
    """A sweep folder is many runs: say how to report on them instead of "not a run"."""
    from .sweep.runner import SWEEP_FILE

    if (path / SWEEP_FILE).is_file():
        raise MaskFileError(path, f"is a sweep folder, not a run: 'masktopo summarize {path}' "
                            f"gives its table and 'masktopo plot {path}' its figure; a report "
                            f"takes its runs: masktopo report {path / 'runs'}/*")  # fmt: skip


def build_report(
    runs: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    every: int = 1,
    conv: str = "unrolled",
    cache: bool = True,
    progress: bool = False,
    figures: str = "svg",
    x: str = "step",
    title: str | None = None,
) -> str:
    """The HTML text of the report on ``runs`` (see the module docstring for its content).

    Parameters
    ----------
    runs : path or sequence of paths
        Run directories.
    labels : sequence of str, optional
        One label per run (default: the folder names).
    every, conv, cache, progress
        As for :func:`~masktopo.analysis.runs.analyze_run`.
    figures : {"svg", "png"}
        How the figures are embedded (both as ``data:`` URIs).
    x : {"step", "epoch", "event"}
        Horizontal axis of the figures.
    title : str, optional
        Page title (default ``"masktopo report: <labels>"``).

    Returns
    -------
    str
        A complete HTML5 document.

    Raises
    ------
    MaskFileError
        When a path is not a run directory, or its run.json / events.jsonl is invalid. Missing or
        corrupt *event* files do not raise: those events are left out and named in the report.
    UnknownNameError
        For an unknown figure format or x axis.
    """
    from . import folder_figures
    from .runs import read_run

    paths = [Path(runs)] if isinstance(runs, str | os.PathLike) else [Path(p) for p in runs]
    if not paths:
        raise MaskTopoError("no run directory given")
    if figures not in FIGURE_FORMATS:
        raise UnknownNameError("figure format", figures, FIGURE_FORMATS)
    if x not in X_AXES:
        raise UnknownNameError("x axis", x, X_AXES)
    if labels is None:
        labels = [_label_of(p) for p in paths]
        if len(set(labels)) < len(labels):
            labels = [f"{p.resolve().parent.name}/{_label_of(p)}" for p in paths]
    labels = [str(s) for s in labels]
    if len(labels) != len(paths):
        raise MaskTopoError(f"{len(labels)} label(s) for {len(paths)} run(s)")

    for p in paths:
        _refuse_sweep(p)
    loaded = [read_run(p) for p in paths]  # every run is readable before any analysis
    reports = [
        _RunReport(p, lab, run, None) for p, lab, run in zip(paths, labels, loaded, strict=True)
    ]
    for r in reports:
        _read_summary(r)
        _analyze(r, every=every, conv=conv, cache=cache, progress=progress)
        _analyze_paths(r)

    compare_figs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="masktopo-report-") as tmp:
        for i, r in enumerate(reports):
            if r.final_event is not None and r.run.kind != "prune":  # prune: solves, no trajectory
                r.figures = _draw([r.table], [r.label], Path(tmp) / f"run-{i}", figures, x)
            if r.run.kind == "pags":
                _pags(r, Path(tmp) / f"pags-{i}", figures)
            elif (entry := folder_figures.for_kind(r.run.kind)) is not None:
                _folder_figures(r, entry, Path(tmp) / f"folder-{i}", figures)
        ok = [r for r in reports if r.final_event is not None and r.run.kind != "prune"]
        if len(reports) > 1 and len(ok) > 1:
            compare_figs = _draw(
                [r.table for r in ok], [r.label for r in ok], Path(tmp) / "compare", figures, x
            )

    title = title or f"masktopo report: {', '.join(labels)}"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = ""
    if len(reports) > 1:
        items = ['<li><a href="#compare">Comparison</a></li>'] + [
            f'<li><a href="#run-{i}">{_e(r.label)}</a></li>' for i, r in enumerate(reports)
        ]
        nav = "<nav><ul>" + "".join(items) + "</ul></nav>"
    body = []
    if len(reports) > 1:
        body.append(_compare_section(reports, compare_figs))
    body += [_run_section(r, i) for i, r in enumerate(reports)]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="masktopo {_e(__version__)}">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="note">{len(reports)} run(s); generated {_e(now)} by masktopo '
        f"{_e(__version__)}. Undefined values (NaN) are shown as —.</p></header>\n"
        f"{nav}\n<main>\n" + "\n".join(body) + "\n</main>\n"
        "<footer>Metrics: masktopo analysis (docs/metrics.md). Self-contained page: figures are "
        "embedded; nothing is loaded from elsewhere.</footer>\n</body>\n</html>\n"
    )


def write_report(runs, out: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`build_report` ``(runs, **kwargs)`` to ``out`` atomically; returns the path.

    The output is checked before any run is analyzed (it may be neither an input nor a part of
    a run directory, such as ``run/run.json``), and written only when the page is complete.
    """
    from .files import atomic_write_bytes
    from .runs import check_output

    inputs = [runs] if isinstance(runs, str | os.PathLike) else list(runs)
    path = check_output(out, inputs, "the report")
    text = build_report(runs, **kwargs)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
