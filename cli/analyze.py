"""``masktopo analyze``: graph metrics of mask files, one row per layer plus a network row.

A run directory is analyzed event by event (:func:`masktopo.analysis.runs.analyze_run`: every
event, or every K-th with ``--every``, incrementally through the cache in ``RUN/analysis/``), unless
``--event K`` picks one event. Every input is loaded and analyzed before anything is written, so a
bad input leaves no output file; ``--out`` is written atomically. Warnings (a run's missing or
corrupt event file, an unwritable cache) are printed as ``masktopo: warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from masktopo import __version__
from masktopo.errors import MaskFileError, MaskTopoError
from masktopo.options import (
    Options,
    RunOptions,
    add_arguments,
    flag_values,
    gather,
    option,
    parse_sets,
    same_as,
)

from ._output import (
    add_config_arguments,
    add_progress,
    json_records,
    print_config,
    render_frame,
    render_rows,
    require_events,
    require_stdout,
    show_progress,
    write_stdout,
)

FORMATS = ("table", "csv", "json", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}

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
NETWORK_LAYER = "(network)"

#: Show a progress bar for a single file when its masks have at least this many entries in all.
LARGE_MASKSET = 5_000_000


@dataclass(frozen=True)
class AnalyzeConfig:
    """The options of ``masktopo analyze``, declared once (flags, ``--config``, ``--print-config``
    derived from them); the graph options and the run options are those of the library
    (:class:`masktopo.options.Options`, :class:`masktopo.options.RunOptions`)."""

    metrics: tuple[str, ...] | None = option(
        None, "metrics to compute, comma or space separated; put it after the PATHs. See "
        "--list-metrics", default_text="all")  # fmt: skip
    weights: bool = option(True, "use the files' weights for the weighted metrics",
                           negative="--no-weights",
                           negative_help="ignore weights; no weighted metrics")  # fmt: skip
    format: str | None = option(None, "output format", choices=FORMATS, usage_choices=True,
                                default_text="from the --out suffix, else table")  # fmt: skip
    device: str | None = option(None, "where to compute", choices=("cpu", "cuda"),
                                usage_choices=True, default_text="cpu")  # fmt: skip
    route: str = option("auto", "how the spectra are solved: auto (the compiled engine on the "
                        "CPU, batched Gram on CUDA) or batched (the CUDA code path on any device)",
                        choices=("auto", "batched"), usage_choices=True)  # fmt: skip
    zeros_as_mask: bool = option(False, "for checkpoints without masks: each weight's nonzeros "
                                 "define its mask")  # fmt: skip
    event: int | None = option(None, "for run directories: analyze only event K (negative counts "
                               "from the end)", metavar="K", default_text="every event")  # fmt: skip
    every: int = same_as(RunOptions, "every")
    cache: bool = same_as(RunOptions, "cache")
    conv: str = same_as(Options, "conv")
    gate: str = same_as(Options, "gate")
    imdb: str = same_as(Options, "imdb")
    narc: str = same_as(Options, "narc")
    allow_empty: bool = same_as(Options, "allow_empty")
    network: bool = option(True, "append the '(network)' row", negative="--no-network",
                           negative_help="do not append the '(network)' row")  # fmt: skip


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="graph metrics of mask files, one row per layer",
        description=(
            "Load each PATH (a .safetensors/.npz mask file, a PyTorch checkpoint or a run "
            "directory), turn every layer mask into a bipartite graph and compute its metrics. "
            "One row per layer, plus one '(network)' row per file. A run directory gives these "
            "rows for every mask event (cached in RUN/analysis/, so a second call computes only "
            "new events), or for one event with --event."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="mask files or run directories")
    add_arguments(p, AnalyzeConfig)
    add_config_arguments(p, "analyze", "write to FILE (atomically) instead of stdout", "FILE")
    add_progress(p)
    p.add_argument("--list-metrics", action="store_true", help="list the metric names and exit")
    return p


def output_format(fmt: str | None, out: str | None) -> str:
    """The output format: ``--format`` when given, else from the ``--out`` suffix, else table."""
    if fmt is not None:
        return fmt
    if out is not None:
        return _SUFFIX_FORMATS.get(Path(out).suffix.lower(), "table")
    return "table"


def list_metrics() -> str:
    from masktopo.analysis import METRICS

    rows = [
        (name, m.group, "yes" if m.weighted else "", m.description) for name, m in METRICS.items()
    ]
    return render_rows(("name", "group", "weighted", "description"), rows)


def _check_output(fmt: str, out: str | None, inputs: list[str]) -> None:
    if fmt == "parquet":
        if out is None:
            raise MaskTopoError(
                "--format parquet needs --out FILE (parquet is not written to stdout)"
            )
        if importlib.util.find_spec("pyarrow") is None:
            raise MaskTopoError(
                "--format parquet needs pyarrow: pip install 'masktopo[parquet]' (or pyarrow)"
            )
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
    from masktopo.analysis.runs import NETWORK, analyze_run

    df = analyze_run(path, weights=cfg.weights, metrics=metrics, device=cfg.device,
                     route=cfg.route, progress=show, every=cfg.every, cache=cfg.cache,
                     **_graph(cfg))  # fmt: skip
    require_events(df, path)
    if not cfg.network:
        df = df[df["layer"] != NETWORK].reset_index(drop=True)
    return df


def _graph(cfg: AnalyzeConfig) -> dict:
    """The graph options of ``cfg`` (:class:`masktopo.options.Options` but ``allow_empty``)."""
    return {k: getattr(cfg, k) for k in ("conv", "gate", "imdb", "narc")}


def _read_input(path, cfg):
    """Check one PATH before anything is computed or written: a run directory's run.json and
    events (None is returned: its events are read when analyzed), or a mask file's MaskSet."""
    from masktopo.inputs import load
    from masktopo.runs import read_run

    if cfg.event is None and Path(path).is_dir():
        read_run(path)
        return None
    return load(path, event=cfg.event, zeros_as_mask=cfg.zeros_as_mask,
                weights=cfg.weights)  # fmt: skip


def _analyze_one(path, ms, cfg, metrics: list[str] | None, show: bool, progress: bool):
    """Analyze one loaded mask set (one row per layer)."""
    from masktopo import analysis

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


def _with_network_row(df, network: dict):
    """``df`` with the network row appended; integer-only new columns (``n_layers``) stay Int64."""
    import pandas as pd

    network = {**network, "layer": NETWORK_LAYER}
    out = pd.concat([df, pd.DataFrame([network])], ignore_index=True)
    for key, value in network.items():
        if key not in df.columns and isinstance(value, int) and not isinstance(value, bool):
            out[key] = out[key].astype("Int64")
    return out


def _for_parquet(df):
    """A copy whose mixed columns have one Arrow type: numbers and bools together become float
    (the network row's ``is_ramanujan`` is the fraction of Ramanujan layers)."""
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


def analyze_paths(args, cfg, metrics: list[str] | None):
    """Load and analyze every path; the DataFrame of all rows (nothing is written here)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from masktopo import analysis

    paths = list(args.paths)
    several = len(paths) > 1
    show = show_progress(args)
    # Every input is read and checked before any is analyzed: a run's analysis writes its cache,
    # which a bad input further on must not leave behind.
    loaded = [_in_context(path, _read_input, path, cfg) for path in paths]
    frames = []
    bar = tqdm(paths, desc="files", unit="file", file=sys.stderr, disable=not (show and several))
    for path, ms in zip(bar, loaded, strict=True):
        whole_run = ms is None
        if whole_run:
            df = _in_context(path, _analyze_run, path, cfg, metrics, show)
        else:
            df = _in_context(path, _analyze_one, path, ms, cfg, metrics, show, args.progress)
        if cfg.network and not whole_run:
            df = _with_network_row(df, analysis.aggregate(df))
        if several:
            df.insert(0, "file", str(path))
        frames.append(df)
    bar.close()
    return pd.concat(frames, ignore_index=True) if several else frames[0]


def render(df, fmt: str, metrics: list[str] | None) -> str:
    """Text of the table, csv or json output."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        import json

        return json.dumps(json_records(df), indent=2) + "\n"
    if metrics is None:
        columns = TABLE_COLUMNS
    else:
        columns = ("file", "event", "step", "layer", "shape", *metrics, "reason")
    return render_frame(df, columns) + "\n"


def run(args) -> int:
    if args.list_metrics:
        print(list_metrics())
        return 0
    cfg = gather(AnalyzeConfig, config=args.config, table="analyze",
                 flags=flag_values(args, AnalyzeConfig), sets=parse_sets(args.sets))  # fmt: skip
    if args.print_config:
        print_config(cfg, "analyze", f"masktopo analyze --config FILE PATH... (masktopo "
                     f"{__version__})")  # fmt: skip
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

    df = analyze_paths(args, cfg, metrics)

    from masktopo.files import atomic_write, atomic_write_bytes

    if fmt == "parquet":
        table = _for_parquet(df)
        atomic_write(Path(args.out), lambda f: table.to_parquet(f, index=False))
        return 0
    text = render(df, fmt, metrics)
    if args.out is None:
        write_stdout(text)
    else:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
    return 0
