"""Topology over training: the metrics of every mask event of a run directory, cached by the run.

:func:`analyze_run` reads a run directory (``run.json``, ``events.jsonl``, one mask file per event;
docs/formats.md), runs :func:`~masktopo.analysis.metrics.analyze` and
:func:`~masktopo.analysis.metrics.aggregate` on the mask set of every selected event, and returns
one long table: a row per (event, layer) and a network row per event (``level`` says which:
``"layer"`` or ``"network"``), with the event's step, epoch, kind and recorded scalars (losses,
accuracies, ``R_s``). ``analyze_run(path, level="layer")`` and ``level="network"`` give the two
tables apart, each with only its own columns.

The ``event`` number is the unique key of an event (with ``layer``, of a layer row); ``step`` is
not: the last update and the ``final`` event of a run, for example, share a step. Pivot or index
on ``event``.

The per-event results are cached in ``RUN/analysis/<key>.npz`` (``key`` a hash of the analysis
options and metric list). A later call with the same options computes only the events that are not
in the cache yet, so a run that is still training can be analyzed again and again. Every cached
event is validated against its current line of ``events.jsonl`` and the size and modification time
of its mask file; an event that no longer matches (a resumed run that rewrote its events) is
computed again. The cache format is described in docs/formats.md ("Run-analysis cache").

Events are analyzed in parallel: by default two worker threads (``workers``, or
``$MASKTOPO_WORKERS``) each analyze whole events, with one torch/BLAS thread and no nested spectral
worker, so a 2-core machine runs exactly two busy threads (the compiled kernels, numpy and torch
release the GIL).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..checks import is_int, is_integer, is_number
from ..errors import MaskFileError, MaskValidationError
from ..files import atomic_write
from ..options import Options, RunOptions, grouped
from ..runs import EVENT_FIELDS, Run, read_run
from ..runs.layout import ANALYSIS_DIR
from ..threads import one_blas_thread
from .metrics import (
    INT_METRICS,
    METRICS,
    NETWORK,
    NETWORK_NAMES,
    aggregate,
    analyze,
    resolve_metrics,
)
from .spectral import alone, cpu_workers

__all__ = ["CACHE_FORMAT", "CACHE_FORMAT_VERSION", "LEVELS", "NETWORK", "analyze_run"]

CACHE_FORMAT = "masktopo.run-analysis"
#: 2: singular values below the numerical floor are stored as 0
#: (:data:`masktopo.analysis.metrics.SV_FLOOR`); version-1 caches are not read.
CACHE_FORMAT_VERSION = 2
#: What ``analyze_run(level=...)`` returns: both kinds of rows, or one table.
LEVELS = ("all", "layer", "network")
#: Columns only layer rows have (dropped from ``level="network"``).
LAYER_ONLY = ("layer", "layer_kind", "shape", "is_ramanujan")
#: Columns only network rows have (dropped from ``level="layer"``).
NETWORK_ONLY = ("ramanujan_fraction", "n_layers")
#: Event scalars that are always columns of the table (NaN where an event does not record them).
SCALARS = ("density", "R_s", "train_loss", "train_acc", "val_loss", "val_acc")
#: Value columns of the cache besides the metrics: aggregate's layer count (network rows only).
_EXTRA = ("n_layers",)
_NO_WEIGHTS = "no weights dumped at this event: weighted metrics undefined"


@dataclass(frozen=True)
class _Job:
    """What every event is analyzed with (shared by the worker threads)."""

    run: Run
    opts: Options
    names: tuple[str, ...]
    weights: bool
    device: Any
    route: str = "auto"
    invalid: str = "skip"  # the network row's rule for gated-out layers (aggregate)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.names, *_EXTRA)


@dataclass
class _Result:
    """One event's values: ``values[i, j]`` is column j of row i (the layers in run order, then
    the network row), ``reasons`` one text per row."""

    sig: str
    values: np.ndarray
    reasons: list[str]


# --------------------------------------------------------------------------------------------
# One event
# --------------------------------------------------------------------------------------------


def _event_values(job: _Job, k: int) -> tuple[np.ndarray, list[str]]:
    """Metric values of event ``k``: a ``(n_layers + 1, n_columns)`` float array and the reasons.
    The network row holds :func:`aggregate`'s values under the layer columns' names (the
    Ramanujan fraction under ``is_ramanujan``: the cache's layout; :func:`_table` renames).

    Raises :class:`MaskFileError` when the event's mask file is missing or invalid.
    """
    ms = job.run.load(k, weights=job.weights)
    use_w = job.weights and ms.has_weights
    names = [n for n in job.names if use_w or not METRICS[n].weighted]
    columns = job.columns
    n_layers = len(ms)
    values = np.full((n_layers + 1, len(columns)), math.nan)
    reasons = [""] * n_layers
    if names:
        o = job.opts
        df = analyze(ms, weights=use_w, metrics=names, device=job.device, route=job.route,
                     options=o)  # fmt: skip
        net = aggregate(df, invalid=job.invalid)
        for name in names:
            j = columns.index(name)
            values[:n_layers, j] = _floats(df[name])
            values[n_layers, j] = _float(net[NETWORK_NAMES.get(name, name)])
        reasons = [str(r) for r in df["reason"]]
    values[n_layers, columns.index("n_layers")] = n_layers
    if len(names) < len(job.names):
        reasons = [f"{r}; {_NO_WEIGHTS}" if r else _NO_WEIGHTS for r in reasons]
    return values, [*reasons, ""]


def _floats(col) -> np.ndarray:
    """A metric column as float64 (bool as 0/1, missing as NaN)."""
    return col.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _float(v) -> float:
    return math.nan if v is None else float(v)


def _signature(run: Run, k: int) -> str:
    """What a cached event is valid for: its events.jsonl line and its mask file's size and
    modification time."""
    ev = run.event(k)
    line = json.dumps(ev, sort_keys=True, separators=(",", ":"), default=str)
    try:
        st = (run.path / ev["file"]).stat()
        stat = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stat = "missing"
    return hashlib.sha256(f"{line}\0{stat}".encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# Many events, in parallel
# --------------------------------------------------------------------------------------------


def _one(job: _Job, k: int):
    """``("ok", values, reasons)`` or ``("bad", problem)`` for event ``k``."""
    try:
        values, reasons = _event_values(job, k)
    except MaskFileError as exc:
        return ("bad", str(exc))
    return ("ok", values, reasons)


def _compute(job: _Job, todo: list[int], workers: int, progress: bool, done: dict) -> None:
    """Analyze the events ``todo``, putting ``k -> outcome`` into ``done`` as they finish (so a
    caller interrupted midway keeps what was computed)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="events", unit="event", file=sys.stderr,
               disable=not progress, leave=False)  # fmt: skip
    try:
        if workers >= 2 and len(todo) >= 2 and job.device.type == "cpu":
            _compute_threaded(job, todo, min(workers, len(todo)), bar, done)
        for k in todo:  # serial
            if k not in done:
                done[k] = _one(job, k)
                bar.update()
    finally:
        bar.close()


def _one_alone(job: _Job, k: int):
    """:func:`_one` without a nested spectral worker (this thread is one of the event workers)."""
    with alone():
        return _one(job, k)


def _compute_threaded(job: _Job, todo: list[int], workers: int, bar, done: dict) -> None:
    """Events spread over ``workers`` threads of this process, one event each at a time.

    The compiled kernels, numpy and torch release the GIL for their work, so the threads keep
    the cores busy without a fork (unsafe in a multi-threaded process, which every process that
    imported torch is) or a worker start-up. torch, BLAS and OpenMP run one thread each
    meanwhile (restored after), so ``workers`` threads use ``workers`` cores. An interruption
    (Ctrl-C) cancels the events not started and keeps the finished ones in ``done``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_blas_thread():
            pool = ThreadPoolExecutor(workers, thread_name_prefix="masktopo-events")
            futures = {pool.submit(_one_alone, job, k): k for k in todo}
            try:
                for fut in as_completed(futures):
                    done[futures[fut]] = fut.result()
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


def _cache_key(job: _Job) -> str:
    spec = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "masktopo_version": __version__,
        **_options(job.opts),
        "metrics": list(job.names),
        "definitions": definitions_fingerprint(job.names),
    }
    if job.invalid != "skip":  # keeps the keys of caches written before the option existed
        spec["invalid"] = job.invalid
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _code_digest(h, code) -> None:
    """Feed a code object into ``h``: its bytecode, names and constants, nested code objects
    recursively (their ``repr`` holds a memory address)."""
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_digest(h, const)
        else:
            h.update(repr(const).encode())


def definitions_fingerprint(names) -> str:
    """A digest of how the metrics ``names`` and everything they depend on are computed (each
    formula's and network rule's code, dependencies, description): part of the run-analysis
    cache key, so that a metric redefined in place (a user's registration replacing another,
    an edited formula) is computed again instead of read stale from the cache."""
    from ._registry import METRICS, select

    h = hashlib.sha256()
    for m in select([n for n in names if n in METRICS]).metrics:
        h.update(f"{m.name}|{m.description}|{m.depends}|{m.integer}|{m.weighted}".encode())
        for fn in (m.compute, m.reduce):
            code = getattr(fn, "__code__", None)
            if code is not None:
                _code_digest(h, code)
            elif fn is not None:
                h.update(repr(type(fn)).encode())
    return h.hexdigest()[:16]


def _cache_header(job: _Job) -> dict:
    return {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "masktopo_version": __version__,
        "options": _options(job.opts),
        "metrics": list(job.names),
        "columns": list(job.columns),
        "layers": job.run.config["layers"],
    }


def _options(opts: Options) -> dict:
    return {"conv": opts.conv, "gate": opts.gate, "imdb": opts.imdb, "narc": opts.narc}


def _read_cache(path: Path, job: _Job) -> dict[int, _Result]:
    """The cached results of ``path`` (empty when there is no cache); a cache that cannot be read
    or was written for other options or layers is ignored with a warning."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            events, sigs = z["events"], z["sigs"]
            row_event, values, reasons = z["row_event"], z["values"], z["reasons"]
    except Exception as exc:  # any damage: zip, npz, JSON, missing keys
        warnings.warn(f"{path}: ignoring an unreadable run-analysis cache ({exc})", stacklevel=3)
        return {}
    want = _cache_header(job)
    if any(header.get(key) != want[key] for key in want if key != "masktopo_version"):
        warnings.warn(
            f"{path}: ignoring a run-analysis cache written for other options or layers",
            stacklevel=3,
        )
        return {}
    n = len(job.run.config["layers"]) + 1
    rows = len(row_event)
    if (
        values.shape != (rows, len(job.columns))
        or reasons.shape != (rows,)
        or sigs.shape != events.shape
    ):
        warnings.warn(f"{path}: ignoring a damaged run-analysis cache", stacklevel=3)
        return {}
    out: dict[int, _Result] = {}
    starts = np.searchsorted(row_event, events, side="left")
    for k, sig, s in zip(events.tolist(), sigs.tolist(), starts.tolist(), strict=True):
        if s + n <= len(row_event) and (row_event[s : s + n] == k).all():
            out[int(k)] = _Result(str(sig), values[s : s + n], reasons[s : s + n].tolist())
    return out


def _write_cache(path: Path, job: _Job, results: dict[int, _Result]) -> str | None:
    """Write ``results`` atomically; the problem as text when the cache cannot be written."""
    ks = sorted(results)
    n = len(job.run.config["layers"]) + 1
    arrays = {
        "header": np.array(json.dumps(_cache_header(job))),
        "events": np.array(ks, dtype=np.int64),
        "sigs": np.array([results[k].sig for k in ks], dtype=str),
        "row_event": np.repeat(np.array(ks, dtype=np.int64), n),
        "values": (
            np.concatenate([results[k].values for k in ks])
            if ks
            else np.zeros((0, len(job.columns)))
        ),
        "reasons": np.array([r for k in ks for r in results[k].reasons], dtype=str),
    }
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except MaskFileError as exc:
        return exc.problem
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _column(values: list):
    """A pandas column from Python values: Int64 for integers, float64 for other numbers,
    boolean for bools, object otherwise; None is missing."""
    import pandas as pd

    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present) and present:
        return pd.array(values, dtype="boolean")
    if all(is_int(v) for v in present) and present:
        return pd.array(values, dtype="Int64")
    if all(is_number(v) for v in present):
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return pd.array(values, dtype=object)


def _table(job: _Job, ks: list[int], results: dict[int, _Result]):
    import pandas as pd

    run = job.run
    layers = run.layers
    names = [x.name for x in layers]
    n = len(layers) + 1
    events = [run.event(k) for k in ks]

    def per_event(key):
        return [ev.get(key) for ev in events for _ in range(n)]

    cols: dict[str, Any] = {
        "event": np.repeat(np.array(ks, dtype=np.int64), n),
        "step": _column(per_event("step")),
        "epoch": _column([None if v is None else float(v) for v in per_event("epoch")]),
        "event_kind": per_event("kind"),
        "level": ["layer"] * (n - 1) + ["network"],
        "layer": [*names, NETWORK] * len(ks),
        "layer_kind": [*(x.kind for x in layers), None] * len(ks),
        "shape": [*(list(x.shape) for x in layers), None] * len(ks),
    }
    cols["level"] = cols["level"] * len(ks)
    values = (
        np.concatenate([results[k].values for k in ks]) if ks else np.zeros((0, len(job.columns)))
    )
    is_net = np.tile(np.arange(n) == n - 1, len(ks))
    for j, name in enumerate(job.columns):
        v = values[:, j]
        if name in INT_METRICS or name == "n_layers":
            cols[name] = _ints(v)
        elif name in NETWORK_NAMES:  # a layer flag; its network summary has its own column
            flag = pd.array(np.where(np.isnan(v), False, v == 1), dtype="boolean")
            flag[np.isnan(v) | is_net] = pd.NA
            cols[name] = flag
            cols[NETWORK_NAMES[name]] = np.where(is_net, v, np.nan)
        else:
            cols[name] = v
    cols["reason"] = [r for k in ks for r in results[k].reasons]
    numel = np.array([x.numel for x in layers], dtype=np.float64)
    scalars = list(SCALARS) + sorted(
        {key for ev in events for key in ev if key not in EVENT_FIELDS and key not in SCALARS}
    )
    for key in scalars:
        if key in cols:
            continue
        if key == "density":  # layer density on layer rows, network density on network rows
            cols[key] = np.array([d for ev in events for d in _density(ev, names, numel)])
            continue
        raw = [ev.get(key) for ev in events]
        dicts = [v for v in raw if isinstance(v, dict)]
        if dicts and len(dicts) + raw.count(None) == len(raw):
            if all(set(v) <= set(names) for v in dicts):  # {layer: x}: per layer, network sum
                cols[key] = _column([x for v in raw for x in _per_layer(v, names)])
        elif all(v is None or isinstance(v, str | int | float | bool) for v in raw):
            cols[key] = _column([v for v in raw for _ in range(n)])
    df = pd.DataFrame(cols)
    for key in ("event_kind", "level", "layer", "layer_kind", "shape", "reason"):
        df[key] = df[key].astype(object)
    return df


def _ints(v: np.ndarray):
    """A float column of counts as ``Int64`` (NaN missing)."""
    import pandas as pd

    col = pd.array(np.where(np.isnan(v), 0, v).astype(np.int64), dtype="Int64")
    col[np.isnan(v)] = pd.NA
    return col


def _level(df, level: str):
    """The rows (and columns) of ``level``: both kinds, the layer table or the network table."""
    if level == "all":
        return df
    keep = df["level"] == level
    drop = ["level", *(NETWORK_ONLY if level == "layer" else LAYER_ONLY)]
    out = df[keep].drop(columns=[c for c in drop if c in df.columns]).reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def _density(ev: dict, names: list[str], numel: np.ndarray) -> list[float]:
    return [*(ev["nnz"][x] / numel[i] for i, x in enumerate(names)), float(ev["density"])]


def _per_layer(value, names: list[str]) -> list:
    """A per-layer dict spread over the layer rows, its sum on the network row."""
    if not isinstance(value, dict):
        return [None] * (len(names) + 1)
    per = [value.get(x) for x in names]
    nums = [v for v in per if is_number(v)]
    total = sum(nums) if len(nums) == len(per) else None
    return [*per, total]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def analyze_run(
    path: str | os.PathLike,
    *,
    weights: bool = True,
    metrics: Iterable[str] | str | None = None,
    device=None,
    progress: bool = False,
    workers: int | None = None,
    route: str = "auto",
    level: str = "all",
    **options: Any,
):
    """Graph metrics of every mask event of a run directory, incrementally cached.

    Each selected event's mask set is analyzed as :func:`~masktopo.analysis.metrics.analyze`
    does (every layer) and aggregated as :func:`~masktopo.analysis.metrics.aggregate` does (the
    network row). Results are cached in ``RUN/analysis/<key>.npz``; a later call with the same
    options computes only events not cached yet (or whose line or mask file changed).

    Parameters
    ----------
    path : str or os.PathLike
        A run directory (``run.json``, ``events.jsonl``, the events' mask files).
    metrics, device, route
        As for :func:`~masktopo.analysis.metrics.analyze`. ``metrics=None`` means every metric.
        The cache does not depend on ``route`` (the routes agree to rounding).
    weights : bool
        Use the weights of events that dumped them. Weighted metrics of an event without weights
        are NaN, with a reason; when no analyzed event has weights and ``metrics`` is None, the
        weighted columns are left out (as :func:`analyze` does).
    progress : bool
        Show a progress bar (events) on stderr.
    level : {"all", "layer", "network"}
        ``"all"``: the long table, layer and network rows together (``level`` column);
        ``"layer"``: the layer table (layer rows, without ``level`` and the network-only columns
        ``ramanujan_fraction``, ``n_layers``); ``"network"``: the network table (one row per
        event, without ``level`` and the layer-only columns ``layer``, ``layer_kind``, ``shape``,
        ``is_ramanujan``). The cache is the same for all three.
    workers : int, optional
        Processes analyzing events in parallel (each one whole event at a time); default
        :func:`~masktopo.analysis.spectral.cpu_workers` (``$MASKTOPO_WORKERS``, else the usable
        cores, at most 8: :func:`masktopo.threads.default_threads`).
        1 analyzes in this process. CUDA always analyzes in this process.
    **options
        The run options (:class:`masktopo.options.RunOptions`): ``every`` (analyze events ``0,
        every, 2·every, …`` and always the last one; default 1), ``cache`` (read and update
        the cache; False computes every selected event and writes nothing) and ``invalid``
        (the network row's rule for layers whose gated metrics are NaN: ``"skip"`` them, the
        default, or count them as ``"zero"``; :func:`~masktopo.analysis.metrics.aggregate`;
        part of the cache key); and the graph
        options ``conv``, ``gate``, ``imdb``, ``narc`` (:class:`masktopo.options.Options`, as for
        :func:`~masktopo.analysis.metrics.analyze`). Layers without edges are always allowed.

    Returns
    -------
    pandas.DataFrame
        Per event (ascending ``event``), one row per layer in the layer order of ``run.json``,
        then the network row. ``event`` is the unique key of an event; ``step`` is not unique
        (two events may share a step: the last update and ``final``). Columns:

        * ``event`` (int), ``step`` (``Int64``), ``epoch`` (float), ``event_kind`` (the event's
          ``kind`` in events.jsonl: ``init``, ``update``, ``prune``, ``final``, ...);
        * ``level``: ``"layer"`` or ``"network"`` (filter on it before summing over rows);
        * ``layer`` (the layer's name; ``"(network)"`` on network rows), ``layer_kind``
          (``conv``/``linear``), ``shape`` (a list of ints, ``[out, in, *kernel]``): missing on
          network rows;
        * the metric columns: counts as ``Int64`` (summed on network rows), ``is_ramanujan`` as
          the nullable ``boolean`` (layer rows; missing on network rows), the rest float64 (the
          network rule of :func:`~masktopo.analysis.metrics.aggregate`);
        * ``ramanujan_fraction`` (the fraction of Ramanujan layers) and ``n_layers``: network
          rows only;
        * ``reason``, then the event's scalars: ``density`` (the layer's on layer rows, the
          network's on network rows), ``R_s``, ``train_loss``, ``train_acc``, ``val_loss``,
          ``val_acc`` (always present, NaN where the event did not record them) and any other
          scalar of events.jsonl; per-layer records such as ``drop`` and ``grow`` give the
          layer's value on layer rows and the sum on network rows.

        With ``level="layer"`` or ``"network"``, only those rows and their columns.

        ``df.attrs`` holds ``run``, ``options``, ``weighted``, ``events`` (the events in the
        table), ``computed`` and ``cached`` (which of them were computed by this call or read
        from the cache), ``cache`` (the cache file, or None) and ``bad_events``: one dict
        ``{"event", "file", "problem"}`` per selected event whose mask file is missing or invalid
        (those events have no rows; each also gives a warning naming the file and the problem),
        and ``skipped_lines``: one dict ``{"line", "problem"}`` per line of ``events.jsonl`` that
        could not be read (a cut-off or corrupt line; each gave a warning naming it).

    Raises
    ------
    MaskFileError
        When ``path`` is not a run directory, or ``run.json`` or ``events.jsonl`` is invalid.
    UnknownNameError
        For an unknown metric (the message lists the known ones) or option value.
    MaskValidationError
        For ``every`` or ``workers`` below 1, or a weighted metric asked for with
        ``weights=False`` or in a run where no event has weights.

    Warns
    -----
    UserWarning
        Once per bad event (``"<mask file>: <problem>"``), and once when the cache cannot be
        written (the result is returned all the same).

    Examples
    --------
    >>> df = analyze_run("runs/rigl-r18", every=10)  # doctest: +SKIP
    >>> net = df[df.level == "network"]  # doctest: +SKIP
    >>> net.plot(x="step", y="ramanujan_gap")  # doctest: +SKIP
    >>> layers = analyze_run("runs/rigl-r18", every=10, level="layer")  # doctest: +SKIP
    >>> layers.pivot(index="event", columns="layer", values="ramanujan_gap")  # doctest: +SKIP
    """
    if level not in LEVELS:
        from ..errors import UnknownNameError

        raise UnknownNameError("level", level, LEVELS)
    graph, selection = grouped(options, Options, RunOptions)
    opts = dataclasses.replace(graph, allow_empty=True)
    every, cache = selection.every, selection.cache
    invalid = selection.invalid
    workers = cpu_workers() if workers is None else _positive("workers", workers)
    names = tuple(resolve_metrics(metrics, weighted=bool(weights)))
    from .metrics import _device

    dev = _device(device)
    run = read_run(path)
    from .spectral import check_route

    job = _Job(run, opts, names, bool(weights), dev, check_route(route), invalid)

    nums = run.numbers  # 0, 1, ..., with a gap where a bad line of events.jsonl was skipped
    selected = sorted({*nums[::every], nums[-1]}) if nums else []
    explicit_weighted = metrics is not None and any(METRICS[x].weighted for x in names)
    if explicit_weighted and selected and not any(run.event(k)["has_weights"] for k in selected):
        asked = next(x for x in names if METRICS[x].weighted)
        raise MaskValidationError(
            f"{run.path}: metric {asked!r} needs weights, and no analyzed event has them"
        )

    cache_path = run.path / ANALYSIS_DIR / f"{_cache_key(job)}.npz" if cache else None
    stored = _read_cache(cache_path, job) if cache_path is not None else {}
    sigs = {k: _signature(run, k) for k in selected}
    # Cached events whose line or mask file changed (a resumed run rewrote them), or that lie
    # beyond the current end of events.jsonl, are dropped.
    present = set(nums)
    valid = {
        k: r
        for k, r in stored.items()
        if k in present and r.sig == (sigs.get(k) or _signature(run, k))
    }
    changed = len(valid) != len(stored)
    todo = [k for k in selected if k not in valid]
    done: dict[int, tuple] = {}
    try:
        _compute(job, todo, workers, progress, done)
    finally:
        new = {k: _Result(sigs[k], o[1], o[2]) for k, o in done.items() if o[0] == "ok"}
        if cache_path is not None and (new or changed):
            problem = _write_cache(cache_path, job, {**valid, **new})
            if problem is not None:
                warnings.warn(
                    f"{cache_path}: cannot write the run-analysis cache ({problem}); the "
                    "results are returned but not cached",
                    stacklevel=2,
                )
    results = {**valid, **new}
    bad = []
    for k in todo:
        if done[k][0] == "bad":
            bad.append({"event": k, "file": run.event(k)["file"], "problem": done[k][1]})
            warnings.warn(done[k][1], stacklevel=2)
    ks = [k for k in selected if k in results]
    df = _table(job, ks, results)
    weighted = bool(weights) and any(run.event(k)["has_weights"] for k in ks)
    if metrics is None and not weighted:
        df = df.drop(columns=[x for x in names if METRICS[x].weighted])
    df.attrs.update(
        run=str(run.path),
        options={
            "conv": opts.conv,
            "gate": opts.gate,
            "imdb": opts.imdb,
            "narc": opts.narc,
            "every": every,
        },
        weighted=weighted,
        events=ks,
        computed=sorted(new),
        cached=[k for k in ks if k in valid],
        cache=None if cache_path is None else str(cache_path),
        bad_events=bad,
        skipped_lines=[{"line": i, "problem": p} for i, p in run.skipped],
    )
    return _level(df, level)


def _positive(what: str, value) -> int:
    if not is_integer(value) or value < 1:
        raise MaskValidationError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
