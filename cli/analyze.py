"""``masktopo analyze``: graph metrics of mask files, one row per layer plus a network row.

A run directory is analyzed event by event (:func:`masktopo.analysis.runs.analyze_run`: every
event, or every K-th with ``--every``, incrementally through the cache in ``RUN/analysis/``), unless
``--event K`` picks one event. Every input is loaded and analyzed before anything is written, so a
bad input leaves no output file; ``--out`` is written atomically. Warnings (a run's missing or
corrupt event file, an unwritable cache) are printed as ``masktopo: warning: ...`` lines.

The output is one table with two kinds of rows, told apart by the ``level`` column: ``layer``
rows (the layer table of :func:`masktopo.analysis.analyze`) and ``network`` rows (the network row
of :func:`masktopo.analysis.aggregate`, ``layer`` reading ``(network)``; ``--no-network`` leaves
them out). Filter on ``level`` before summing over rows. Columns that hold a different quantity on
network rows have their own name there (``ramanujan_fraction``, ``n_layers``). The text table
(``--format table``, the default on stdout) shows the main columns that fit the terminal and says
which it left out; ``--columns`` picks columns for every format (``all``: every column).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from masktopo.errors import MaskFileError, MaskTopoError
from masktopo.options import (
    Options,
    RunOptions,
    add_arguments,
    option,
    same_as,
)

from ._output import (
    add_config_arguments,
    add_progress,
    check_parquet,
    command_config,
    compile_notice,
    fit_table,
    frame_rows,
    json_records,
    note,
    output_format,
    print_config,
    render_markdown,
    render_rows,
    require_events,
    require_stdout,
    show_progress,
    terminal_width,
    write_stdout,
)

FORMATS = ("table", "csv", "json", "parquet", "markdown")
#: Formats that hold every column unless ``--columns`` says otherwise.
MACHINE_FORMATS = ("csv", "json", "parquet")

#: Columns of the text table when ``--metrics`` is not given (those present are shown).
TABLE_COLUMNS = (
    "file",
    "event",
    "step",
    "layer",
    "shape",
    "density",
    "mu0",
    "mu_hat",
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "full_spectrum_norm",
    "normalized_spectral_gap",
    "reason",
)
#: Columns the text table always shows (the rows' keys), however narrow the terminal.
KEY_COLUMNS = ("file", "event", "step", "layer")
#: The ``layer`` label of the network rows (:data:`masktopo.analysis.metrics.NETWORK`).
NETWORK_LAYER = "(network)"
#: Columns that describe a row, before the metrics (in this order).
_LEAD = ("file", "event", "step", "epoch", "event_kind", "level", "layer", "layer_kind", "shape")

#: Show a progress bar for a single file when its masks have at least this many entries in all.
LARGE_MASKSET = 5_000_000


@dataclass(frozen=True)
class AnalyzeConfig:
    """The options of ``masktopo analyze``, declared once (flags, ``--config``, ``--print-config``
    derived from them); the graph options and the run options are those of the library
    (:class:`masktopo.options.Options`, :class:`masktopo.options.RunOptions`)."""

    metrics: tuple[str, ...] | None = option(
        None, "metrics to compute, comma separated (repeat the flag to add more); see "
        "--list-metrics", default_text="all")  # fmt: skip
    columns: tuple[str, ...] | None = option(
        None, "columns to output, comma separated, in this order; 'all' for every column",
        default_text="csv/json/parquet: every column; table: the main ones that fit the "
        "terminal; markdown: the main ones")  # fmt: skip
    weights: bool = option(True, "use the files' weights for the weighted metrics",
                           negative="--no-weights",
                           negative_help="ignore weights; no weighted metrics")  # fmt: skip
    format: str | None = option(None, "output format: table (aligned text for a terminal), csv, "
                                "json, parquet (needs --out) or markdown", choices=FORMATS,
                                usage_choices=True,
                                default_text="from the --out suffix, else table")  # fmt: skip
    device: str | None = option(None, "where to compute", choices=("cpu", "cuda"),
                                usage_choices=True, default_text="cpu")  # fmt: skip
    route: str = option("auto", "how the spectra are solved: auto (the compiled CPU engine; on "
                        "CUDA the batched Gram route for matrices with a side of 2048 or more) "
                        "or batched (the CUDA code path for every matrix, on any device)",
                        choices=("auto", "batched"), usage_choices=True)  # fmt: skip
    zeros_as_mask: bool = option(False, "for checkpoints without masks: each weight's nonzeros "
                                 "define its mask")  # fmt: skip
    mask: str = option("auto", "where masks come from: auto (stored masks; a model folder's "
                       "nonzero weights), nonzero (every weight's nonzeros; a .safetensors "
                       "checkpoint, or a .bin state dict, is then read tensor by tensor like a "
                       "model folder)",
                       choices=("auto", "nonzero"), usage_choices=True)  # fmt: skip
    layers: tuple[str, ...] | None = option(None, "only the layers whose names match one of these "
                                            "glob patterns ('model.layers.*.mlp.*'; * matches "
                                            "dots too)", metavar="GLOB",
                                            default_text="every layer")  # fmt: skip
    include: tuple[str, ...] = option((), "tensors of a model folder analyzed besides its linear "
                                      "layers: embeddings, head (the LM head)",
                                      choices=("embeddings", "head"), what="tensor class",
                                      usage_choices=True)  # fmt: skip
    structure: str = option("auto", "N:M pattern and degree-spread columns (nm, deg_out_min, "
                            "...): on, off, or auto (on for model folders and --mask nonzero)",
                            choices=("auto", "on", "off"), usage_choices=True)  # fmt: skip
    event: int | None = option(None, "for run directories: analyze only event K (negative counts "
                               "from the end)", metavar="K", default_text="every event")  # fmt: skip
    every: int = same_as(RunOptions, "every")
    cache: bool = same_as(RunOptions, "cache")
    invalid: str = same_as(RunOptions, "invalid")
    conv: str = same_as(Options, "conv")
    gate: str = same_as(Options, "gate")
    imdb: str = same_as(Options, "imdb")
    narc: str = same_as(Options, "narc")
    allow_empty: bool = same_as(Options, "allow_empty")
    network: bool = option(True, "append the network rows (level 'network')",
                           negative="--no-network",
                           negative_help="only the layer rows: no network row")  # fmt: skip


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="graph metrics of mask files, one row per layer",
        description=(
            "Load each PATH (a .safetensors/.npz mask file, a PyTorch checkpoint or a run "
            "directory), turn every layer mask into a bipartite graph and compute its metrics. "
            "One row per layer (level 'layer'), plus one network row per file (level 'network', "
            "layer '(network)'). A run directory gives these rows for every mask event (cached "
            "in RUN/analysis/, so a second call computes only new events; 'event' is the unique "
            "key of an event, 'step' is not), or for one event with --event. Options that take "
            "lists take one comma-separated value (--metrics mu0,mu_hat) and may be repeated."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="mask files or run directories")
    add_arguments(p, AnalyzeConfig)
    add_config_arguments(p, "analyze", "write to FILE (atomically) instead of stdout", "FILE")
    add_progress(p)
    p.add_argument("--list-metrics", action="store_true", help="list the metric names and exit")
    return p


def list_metrics() -> str:
    from masktopo.analysis import METRICS

    rows = [
        (name, m.group, "yes" if m.weighted else "", m.description) for name, m in METRICS.items()
    ]
    return render_rows(("name", "group", "weighted", "description"), rows)


def _check_output(fmt: str, out: str | None, inputs: list[str]) -> None:
    check_parquet(fmt, out)
    if out is not None:
        from masktopo.runs import check_output

        check_output(out, inputs)


def _check_device(device: str | None) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MaskTopoError("--device cuda: no CUDA device is available on this machine")


def _empty_layers(maskset) -> list[str]:
    return [name for name, nnz in maskset.nnz_per_layer().items() if nnz == 0]


def _analyze_run(path, cfg, metrics: list[str] | None, show: bool):
    """Every (or every K-th) event of a run directory, with its network rows."""
    from masktopo.analysis.runs import NETWORK_ONLY, analyze_run

    df = analyze_run(path, weights=cfg.weights, metrics=metrics, device=cfg.device,
                     route=cfg.route, progress=show, every=cfg.every, cache=cfg.cache,
                     invalid=cfg.invalid, **_graph(cfg))  # fmt: skip
    require_events(df, path)
    if not cfg.network:
        df = df[df["level"] == "layer"].drop(columns=[c for c in NETWORK_ONLY if c in df])
        df = df.reset_index(drop=True)
    return df


def _graph(cfg: AnalyzeConfig) -> dict:
    """The graph options of ``cfg`` (:class:`masktopo.options.Options` but ``allow_empty``)."""
    return {k: getattr(cfg, k) for k in ("conv", "gate", "imdb", "narc")}


def _read_input(path, cfg):
    """Check one PATH before anything is computed or written: a run directory's run.json and
    events (None is returned: its events are read when analyzed), or a mask file's MaskSet."""
    from masktopo.inputs import load
    from masktopo.runs import read_run
    from masktopo.store.hf_folder import is_hf_folder, open_source
    from masktopo.store.safetensors_file import is_masktopo_file

    p = Path(path)
    suffix = p.suffix.lower()
    lazy_file = cfg.mask == "nonzero" and suffix in (".safetensors", ".bin") and not p.is_dir()
    if lazy_file and suffix == ".safetensors" and is_masktopo_file(p):
        note(f"{path}: a masktopo mask file; its stored masks are analyzed (--mask nonzero "
             "reads plain checkpoints)")  # fmt: skip
        lazy_file = False
    if cfg.event is None and (is_hf_folder(p) or lazy_file):
        try:
            return open_source(path, layers=cfg.layers, include=cfg.include)
        except MaskFileError:
            # a .bin that is not a flat zip-format state dict (nested, legacy): read it whole,
            # as any PyTorch checkpoint (its own errors, if it is broken)
            if not (lazy_file and suffix == ".bin"):
                raise
    if cfg.event is None and p.is_dir():
        if cfg.layers:
            raise MaskFileError(path, "--layers selects layers of mask files and model folders; "
                                "for a run directory give --event K too")  # fmt: skip
        read_run(path)
        return None
    return load(path, event=cfg.event, weights=cfg.weights, layers=cfg.layers,
                zeros_as_mask=cfg.zeros_as_mask or cfg.mask == "nonzero")  # fmt: skip


def _analyze_one(path, ms, cfg, metrics: list[str] | None, show: bool, progress: bool,
                 world=None):  # fmt: skip
    """Analyze one loaded mask set or model source (one row per layer); None on a torchrun rank
    other than 0."""
    from masktopo import analysis
    from masktopo.analysis.lazy import analyze_layers, refs_of_maskset, refs_of_source
    from masktopo.options import Options
    from masktopo.store.hf_folder import HFSource

    lazy = isinstance(ms, HFSource)
    structure = cfg.structure == "on" or (cfg.structure == "auto" and lazy)
    if lazy or structure or (world is not None and world.distributed):
        refs = refs_of_source(ms) if lazy else refs_of_maskset(ms)
        big = (ms.nbytes if lazy else ms.numel()) >= LARGE_MASKSET
        return analyze_layers(refs, weights=cfg.weights, metrics=metrics, device=cfg.device,
                              route=cfg.route, structure=structure, world=world,
                              progress=show and (progress or big),
                              options=Options(allow_empty=cfg.allow_empty, **_graph(cfg)))  # fmt: skip
    empty = _empty_layers(ms)
    if empty and not cfg.allow_empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise MaskFileError(
            path,
            f"layer {empty[0]!r}{more} has no kept entry (an all-zero mask); "
            "pass --allow-empty-layers to analyze it anyway",
        )
    return analysis.analyze(ms, weights=cfg.weights, metrics=metrics, device=cfg.device,
                            route=cfg.route, progress=show and (progress or ms.numel() >= LARGE_MASKSET),
                            allow_empty=cfg.allow_empty, **_graph(cfg))  # fmt: skip


def _with_network_row(df, network: dict | None):
    """The layer table ``df`` of one mask file with its ``level`` column, and its network row
    (:func:`masktopo.analysis.aggregate`) appended unless ``network`` is None; columns in the
    order of a run's table, one dtype each (counts ``Int64``, ``is_ramanujan`` ``boolean``)."""
    import pandas as pd

    from masktopo.analysis.metrics import INT_METRICS

    df = df.copy()
    df.insert(0, "level", "layer")
    out = df if network is None else pd.concat([df, pd.DataFrame([network])], ignore_index=True)
    for col in (*INT_METRICS, "n_layers"):
        if col in out:
            out[col] = out[col].astype("Int64")
    if "is_ramanujan" in out:
        out["is_ramanujan"] = out["is_ramanujan"].astype("boolean")
    return out[_ordered(out.columns)]


def _ordered(columns) -> list[str]:
    """Row labels first, then the metrics (the network-only ``ramanujan_fraction`` right after
    ``is_ramanujan``), then ``n_layers`` and ``reason``, then anything else in its order."""
    columns = list(columns)
    lead = [c for c in _LEAD if c in columns]
    tail = [c for c in ("n_layers", "reason") if c in columns]
    rest = [c for c in columns if c not in lead and c not in tail and c != "ramanujan_fraction"]
    if "ramanujan_fraction" in columns:
        at = rest.index("is_ramanujan") + 1 if "is_ramanujan" in rest else len(rest)
        rest.insert(at, "ramanujan_fraction")
    return [*lead, *rest, *tail]


def _for_parquet(df):
    """A copy whose mixed columns have one Arrow type: numbers and bools together become float
    (event scalars that some events record as bools and others as numbers)."""
    import numbers

    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        values = out[col].dropna()
        if len(values) and all(isinstance(v, numbers.Number | bool) for v in values):
            out[col] = pd.to_numeric(out[col].map(lambda v: v if pd.isna(v) else float(v)))
    return out


def _in_context(path, fn, *args):
    """``fn(*args)``, with an error that does not name ``path`` prefixed by it."""
    try:
        return fn(*args)
    except MaskTopoError as exc:
        if str(path) in str(exc):
            raise
        raise MaskFileError(path, str(exc)) from exc


def analyze_paths(args, cfg, metrics: list[str] | None, world=None):
    """Load and analyze every path; the DataFrame of all rows (nothing is written here). Under
    torchrun (``world``), the layers are split across the ranks and rank 0 alone gets the
    table: None on the others."""
    import pandas as pd
    from tqdm.auto import tqdm

    from masktopo.distributed import World

    world = world or World()

    paths = list(args.paths)
    several = len(paths) > 1
    show = show_progress(args)
    # Every input is read and checked before any is analyzed: a run's analysis writes its cache,
    # which a bad input further on must not leave behind.
    loaded = [_in_context(path, _read_input, path, cfg) for path in paths]
    compile_notice(show)  # the first analysis after an install compiles the kernels (~30 s)
    frames = []
    bar = tqdm(paths, desc="files", unit="file", file=sys.stderr, disable=not (show and several))
    for path, ms in zip(bar, loaded, strict=True):
        whole_run = ms is None
        if whole_run:
            if not world.main:  # a run's analysis writes its cache: rank 0 alone
                continue
            df = _in_context(path, _analyze_run, path, cfg, metrics, show)
        else:
            df = _in_context(path, _analyze_one, path, ms, cfg, metrics, show, args.progress,
                             world)  # fmt: skip
            if df is None:  # another rank gathers the rows
                continue
        if not whole_run:
            df = _with_network_row(df, _network_row(df, cfg.invalid) if cfg.network else None)
            event = (getattr(ms, "meta", None) or {}).get("event")
            if cfg.event is not None and isinstance(event, dict):  # which event --event K was
                for i, (col, key) in enumerate((("event", "event"), ("step", "step"),
                                                ("epoch", "epoch"), ("event_kind", "kind"))):  # fmt: skip
                    df.insert(i, col, event.get(key))
        if several:
            df.insert(0, "file", str(path))
        frames.append(df)
    bar.close()
    if not world.main:
        return None
    return pd.concat(frames, ignore_index=True) if several else frames[0]


def _network_row(df, invalid: str) -> dict:
    """:func:`masktopo.analysis.aggregate` of a layer table, with the network values of its
    structure columns (:func:`masktopo.analysis.structure.network_structure`) when it has them."""
    from masktopo import analysis
    from masktopo.analysis.structure import STRUCTURE_COLUMNS, network_structure

    cols = [c for c in STRUCTURE_COLUMNS if c in df]
    row = analysis.aggregate(df.drop(columns=cols), invalid=invalid)
    if cols:
        reason = row.pop("reason")
        row.update(network_structure(df[cols].to_dict("records")), reason=reason)
    return row


def select_columns(df, fmt: str, columns: tuple[str, ...] | None, metrics: list[str] | None):
    """``(columns, fit)``: the columns to output, in order, and whether the text table fits
    them to the terminal (only the default selection of ``--format table`` is fitted).

    ``--columns`` picks them for every format (``all``: every column); else csv, json and
    parquet get every column, and the text formats the main ones (:data:`TABLE_COLUMNS`, or the
    row keys, ``shape``, the ``--metrics`` and ``reason``).

    Raises
    ------
    UnknownNameError
        For a ``--columns`` name that is not a column of the table (listing those that are).
    """
    if columns is not None and "all" in columns:
        return list(df.columns), False
    if columns is not None:
        from masktopo.errors import UnknownNameError

        for name in columns:
            if name not in df.columns:
                raise UnknownNameError("column", name, ["all", *df.columns])
        return list(columns), False
    if fmt in MACHINE_FORMATS:
        return list(df.columns), False
    wanted = TABLE_COLUMNS if metrics is None else (*KEY_COLUMNS, "shape", *metrics, "reason")
    return [c for c in wanted if c in df.columns], fmt == "table"


def render(df, fmt: str, metrics: list[str] | None, columns: tuple[str, ...] | None = None,
           width: int | None = None) -> tuple[str, list[str]]:  # fmt: skip
    """``(text, hidden)``: the table, csv, json or markdown output of ``df`` and the columns the
    text table left out to fit ``width`` characters (None: no limit)."""
    cols, fit = select_columns(df, fmt, columns, metrics)
    if fmt == "csv":
        return df[cols].to_csv(index=False), []
    if fmt == "json":
        import json

        return json.dumps(json_records(df[cols]), indent=2) + "\n", []
    header, rows = frame_rows(df, cols)
    if fmt == "markdown":
        return render_markdown(header, rows) + "\n", []
    if not fit:
        return render_rows(header, rows) + "\n", []
    text, hidden = fit_table(header, rows, width, keep=KEY_COLUMNS)
    return text + "\n", hidden


def hidden_note(hidden: list[str], width: int | None,
                how: str = "--columns all, or --format csv") -> None:  # fmt: skip
    """Say on stderr, in one line, which columns the text table left out to fit ``width`` and
    ``how`` to get every column."""
    if hidden:
        note(
            f"{len(hidden)} column(s) left out to fit {width} terminal columns "
            f"({', '.join(hidden)}); every column: {how}"
        )


def run(args) -> int:
    if args.list_metrics:
        print(list_metrics())
        return 0
    cfg = command_config(args, AnalyzeConfig, "analyze")[0]
    if args.print_config:
        print_config(cfg, "analyze", "--config FILE PATH...")
        return 0
    if not args.paths:
        args.parser.error("the following arguments are required: PATH (or --list-metrics)")
    fmt = output_format(cfg.format, args.out)
    _check_output(fmt, args.out, args.paths)
    if args.out is None:
        require_stdout()
    metrics = None
    if cfg.metrics is not None:  # names checked before any file is read
        from masktopo.analysis.metrics import resolve_metrics

        metrics = resolve_metrics(cfg.metrics, weighted=cfg.weights)
    _check_device(cfg.device)
    if cfg.event is not None and cfg.every != 1:
        raise MaskTopoError("--every selects events of a whole run; it cannot be used with --event")

    from masktopo.distributed import init_world

    world = init_world(cfg.device)
    df = analyze_paths(args, cfg, metrics, world)
    if not world.main:
        return 0

    from masktopo.files import atomic_write, atomic_write_bytes

    if fmt == "parquet":
        table = _for_parquet(df[select_columns(df, fmt, cfg.columns, metrics)[0]])
        atomic_write(Path(args.out), lambda f: table.to_parquet(f, index=False))
        return 0
    width = terminal_width() if args.out is None else None
    text, hidden = render(df, fmt, metrics, cfg.columns, width)
    if args.out is None:
        write_stdout(text)
    else:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
    hidden_note(hidden, width)
    return 0
