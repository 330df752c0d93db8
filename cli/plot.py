"""``masktopo plot``: figures of topology over training, of several runs, or of one mask file.

Run directories are analyzed with :func:`masktopo.analysis.runs.analyze_run` (every event, or every
K-th with ``--every``, through the incremental cache in ``RUN/analysis/``) and drawn with
:func:`masktopo.plots.plot_run`: one run gives a figure per metric and the full-spectrum plane;
several runs give comparison figures. A mask file (or a run with ``--layer``) gives the degree
histograms, singular-value spectrum and, for small layers, the bipartite drawing of its layers.

Nothing is written until every input is analyzed and every figure drawn: the figures are drawn into
a hidden staging folder next to ``--out`` and moved into it at the end, so a failure leaves ``--out``
as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from masktopo.errors import MaskFileError, MaskTopoError
from masktopo.files import Staging
from masktopo.options import FigureOptions, Options, RunOptions, add_arguments, add_list_argument

from ._output import add_progress, apply_options, require_events, show_progress

#: Figure formats (file suffixes) ``--format`` accepts.
FORMATS = ("png", "svg", "pdf")

_DESCRIPTION = """\
Draw figures of mask topology into the folder --out.

One run directory: a figure per metric against training step (a line per layer and the network;
default: Δr, λ, the IMDB terms, the full-spectrum norm, density, R_s and accuracy, those the run
has) and the full-spectrum plane (Δr vs λ). Several run directories: one comparison figure per
metric (the network of each run) and the plane with one trajectory per run. Runs are analyzed
through the cache in RUN/analysis/ (only new events are computed).

A sweep folder (masktopo sweep --out): the final test accuracy (or each --metric) against R_s
(or --against NAME), mean ± std over the seeds of each cell, a colour per method.

A PAGS folder (masktopo pags --out): the network score (or each --metric, a numeric column of
candidates.parquet) of every candidate, the best mask's so far and the base's, and the layers
accepted from each candidate.

A mask file (.safetensors, .npz, a checkpoint), or one run directory with --layer (its last
event, or --event K): per layer, the fan-in/fan-out degree histograms, the singular-value spectrum
with the Ramanujan bound, the weighted spectrum when the file has weights, and a drawing as a
bipartite graph (a large layer's nodes grouped into blocks, or a sample of its edges, as the
figure says).

Figures are PNG (150 dpi) by default; --format svg or pdf gives vector files for a paper. Default
titles say what is drawn (not the run folder); --title '' draws none, --title '{} (RigL, 10%)'
adds to each. The written files are printed, one per line. Options taking several values take
one comma-separated value each (--metric a,b) and may be repeated; --labels takes one label per
flag."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plot",
        help="figures of topology over training, run comparisons or one mask file's layers",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, or one mask file")
    p.add_argument(
        "--out", "-o", metavar="DIR", required=True, help="folder for the figures (created)"
    )
    add_list_argument(
        p,
        "--metric",
        "--metrics",
        dest="metrics",
        help="metrics to draw, comma separated, repeat the flag for more (default: the standard "
        "set the runs have); any name of 'masktopo analyze --list-metrics', R_s, accuracy, loss, "
        "train_acc, val_acc, train_loss, val_loss, or another numeric column of the run table",
    )
    add_list_argument(
        p,
        "--format",
        dest="formats",
        choices=FORMATS,
        metavar="FMT",
        help=f"figure formats, comma separated: {', '.join(FORMATS)} (default png; svg and pdf "
        "are vector)",
    )
    p.add_argument(
        "--title",
        default=None,
        metavar="TEXT",
        help="title of every figure: '' for none (a paper's caption says it), TEXT to replace the "
        "default, '{}' in TEXT stands for the default title (default: what is drawn)",
    )
    add_list_argument(
        p,
        "--layer",
        dest="layers",
        help="layer figures of these layers, comma separated (default for a mask file: every "
        "layer)",
    )
    p.add_argument(
        "--event",
        type=int,
        default=None,
        metavar="K",
        help="with --layer on a run directory: the event to draw (default: the last)",
    )
    add_arguments(p, FigureOptions)
    add_arguments(p, RunOptions)
    add_arguments(p, Options, only=("conv",))
    add_progress(p)
    return p


def split_names(values) -> list[str] | None:
    """Names given space or comma separated (``--metric a,b c``), in order, without repeats."""
    if values is None:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def note(text: str) -> None:
    print(f"masktopo: note: {' '.join(text.split())}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------
def check_metric_names(names: list[str] | None, runs) -> None:
    """Unknown metric names fail before any analysis (the message lists the known ones).

    Known: :data:`masktopo.plots.PLOT_METRICS` and the scalars the runs' events record.
    """
    if not names:
        return
    from masktopo.errors import UnknownNameError
    from masktopo.plots import PLOT_METRICS
    from masktopo.runs import EVENT_FIELDS

    known = set(PLOT_METRICS) | {"n_layers"}
    for run in runs:
        known |= {k for ev in run.events for k in ev if k not in EVENT_FIELDS}
    for name in names:
        if name not in known:
            raise UnknownNameError("metric", name, known)


def analyze_runs(paths, *, every: int, conv: str, cache: bool, progress: bool) -> list:
    """The run-analysis table of every run (a run without an analyzable event is an error)."""
    from masktopo.analysis.runs import analyze_run

    tables = []
    for path in paths:
        df = analyze_run(path, every=every, conv=conv, progress=progress, cache=cache)
        tables.append(require_events(df, path))
    return tables


def _plot_runs(args, paths: list[Path], metrics, formats) -> list[Path]:
    from masktopo.runs import read_run

    runs = [read_run(p) for p in paths]  # "not a run directory" before anything else
    check_metric_names(metrics, runs)
    labels = args.labels
    if labels is not None and len(labels) != len(paths):
        raise MaskTopoError(f"--labels: {len(labels)} label(s) for {len(paths)} run(s)")
    staging = Staging(Path(args.out), "figures")
    with staging:
        tables = analyze_runs(
            paths,
            every=args.every,
            conv=args.conv,
            cache=args.cache,
            progress=show_progress(args),
        )
        from masktopo.plots import plot_run

        if labels is None:
            labels = run_labels(paths)
        files = plot_run(
            tables, staging.path, metrics, formats, labels=labels, x=args.x, title=args.title
        )
        if not files:
            raise MaskTopoError("nothing to draw: the runs have no defined value of any metric")
        return staging.commit(files)


def run_labels(paths: list[Path]) -> list[str]:
    """The runs' folder names, made unique with their parent folder when two are the same."""
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]


# ------------------------------------------------------------------------------------------------
# Layers of one mask file
# ------------------------------------------------------------------------------------------------
def _stem(layer: str) -> str:
    name = layer[: -len(".weight")] if layer.endswith(".weight") else layer
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _plot_layers(args, path: Path, formats) -> list[Path]:
    from masktopo.errors import UnknownNameError
    from masktopo.inputs import load
    from masktopo.plots import save_figure

    if args.event is not None and not path.is_dir():
        raise MaskTopoError("--event picks an event of a run directory; the PATH is a file")
    ms = load(path, event=args.event)
    layers = ms.names if args.layers is None else split_names(args.layers)
    for name in layers:
        if name not in ms:
            raise UnknownNameError("layer", name, ms.names)
    staging = Staging(Path(args.out), "figures")
    with staging:
        files: list[Path] = []

        def emit(fig, stem: str) -> None:
            for fmt in formats:
                files.append(save_figure(fig, staging.path / f"{stem}.{fmt}"))

        bar = None
        if show_progress(args) and len(layers) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(layers), desc="layer figures", unit="layer", file=sys.stderr,
                       dynamic_ncols=True, leave=False)  # fmt: skip
        for name in layers:
            if bar is not None:
                bar.set_postfix_str(name, refresh=False)
                bar.update(0)
            _layer_figures(args, ms, name, emit)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return staging.commit(files)


def _layer_figures(args, ms, name: str, emit) -> None:
    """The degree, spectrum (and weighted spectrum) and bipartite figures of one layer."""
    from masktopo.errors import MaskValidationError
    from masktopo.plots import plot_bipartite, plot_degrees, plot_spectrum

    stem = _stem(name)
    emit(plot_degrees(ms, name, conv=args.conv, title=args.title), f"{stem}-degrees")
    kinds = [("spectrum", False)] + ([("weighted-spectrum", True)] if ms.has_weights else [])
    for what, weighted in kinds:
        try:
            fig = plot_spectrum(ms, name, conv=args.conv, weighted=weighted, title=args.title)
        except MaskValidationError as exc:
            note(f"{what} of layer {name!r} skipped: {exc}")
            continue
        emit(fig, f"{stem}-{what}")
    try:
        fig = plot_bipartite(ms, name, title=args.title)
    except MaskValidationError as exc:
        note(f"bipartite drawing of layer {name!r} skipped: {exc}")
        return
    emit(fig, f"{stem}-bipartite")


# ------------------------------------------------------------------------------------------------
# Result folders that are not runs (sweeps, searches, PAGS, prune): masktopo.folder_figures
# ------------------------------------------------------------------------------------------------
def _folder_plotter(paths: list[Path]):
    from masktopo import folder_figures

    if len(paths) != 1 or not paths[0].is_dir():
        return None
    entry = folder_figures.for_folder(paths[0])
    if entry is None:
        return None

    def plot(args, path: Path, metrics, formats) -> list[Path]:
        with Staging(Path(args.out), "figures") as staging:
            return staging.commit(folder_figures.draw(
                entry, path, staging.path, formats=formats, title=args.title, metrics=metrics,
                against=args.against))  # fmt: skip

    return plot


# ------------------------------------------------------------------------------------------------
def run(args) -> int:
    apply_options(args, FigureOptions, RunOptions, Options)
    args.labels = None if args.labels is None else list(args.labels)
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.exists():
            raise MaskFileError(p, "no such file or directory")
    formats = list(dict.fromkeys(args.formats or ["png"]))
    metrics = split_names(args.metrics)
    layer_mode = args.layers is not None or any(not p.is_dir() for p in paths)
    folder = None if layer_mode else _folder_plotter(paths)
    if folder is not None:
        written = folder(args, paths[0], metrics, formats)
    elif layer_mode:
        if len(paths) != 1:
            raise MaskTopoError(
                f"layer figures (--layer, or a mask file) take exactly one PATH; got {len(paths)}"
            )
        for flag, given in (("--metric", metrics), ("--labels", args.labels)):
            if given:
                raise MaskTopoError(f"{flag} applies to run directories, not to layer figures")
        written = _plot_layers(args, paths[0], formats)
    else:
        if args.event is not None:
            raise MaskTopoError("--event needs --layer (the figures over training use every event)")
        written = _plot_runs(args, paths, metrics, formats)
    for f in written:
        print(f)
    return 0
