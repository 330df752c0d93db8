"""Summaries of a sweep: one row per finished run, then mean ± std per group of runs.

:func:`run_table` reads every finished run of a sweep folder: the cell's axes, then the requested
metrics, each looked up in this order:

1. the run's final metrics (``summary.json`` ``final``: ``test_acc``, ``train_acc``, ``val_acc``,
   ``train_loss``, ``R_s``, ...);
2. the fields of its last mask event (``events.jsonl``: ``density``, ``R_s``, ``rate``, ...);
3. a network topology metric of its last mask event (any metric of
   :data:`masktopo.analysis.METRICS`, and ``ramanujan_fraction``), from the run's analysis cache
   (:func:`masktopo.analysis.analyze_run`; computed and cached when missing).

:func:`summarize` groups the runs by axes (default: every axis but ``seed``) and gives, per
group and metric, the mean, the sample standard deviation (``ddof=1``; NaN for one run) and
``n``, the number of runs with a finite value. A run without a value for a metric (a failed
evaluation, a metric its method does not have) counts in none of that metric's statistics; a
value that is not a finite number (NaN, a string) neither, with a warning naming the file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..checks import json_type
from ..errors import MaskValidationError
from ..runs import read_run
from ..runs.layout import EVENTS_FILE, SUMMARY_FILE
from .runner import SweepState, read_sweep

__all__ = ["SEED_AXIS", "format_summary", "run_table", "summarize"]

#: The axis left out of the default grouping: the repetitions of a cell.
SEED_AXIS = "seed"
_EXTRA = ("ramanujan_fraction",)


def _topology_names() -> set[str]:
    from ..analysis import METRICS

    return set(METRICS) | set(_EXTRA)


def _number(v) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return math.nan


def _topology(run: Path, names: list[str]) -> dict[str, float]:
    from ..analysis import analyze_run

    wanted = [n for n in names if n not in _EXTRA] or ["ramanujan_gap"]
    df = analyze_run(run, metrics=wanted, level="network", every=10**9)
    if df.empty:
        return {}
    last = df.iloc[-1]
    return {n: _number(last[n]) for n in names if n in df.columns}


def run_table(path: str | os.PathLike, metrics: Sequence[str] = ("test_acc",)) -> pd.DataFrame:
    """One row per finished run of the sweep folder ``path``: ``key``, ``folder``, every axis of
    the sweep, then each of ``metrics`` (NaN where the run has no such value).

    Raises
    ------
    MaskFileError
        ``path`` is not a sweep folder, or a finished run's files are damaged.
    MaskValidationError
        A metric that no run has anywhere (naming where it was looked for).
    """
    state = read_sweep(path)
    return _rows(state, list(metrics))


def _rows(state: SweepState, metrics: list[str]) -> pd.DataFrame:
    topo_known = _topology_names()
    rows, seen = [], set()
    unusable: dict[str, list[str]] = {}  # metric -> "FILE (value)" of runs that have no number
    for cell in state.cells:
        if state.state(cell) != "done":
            continue
        run = state.run_dir(cell)
        r = read_run(run)
        final = (r.summary() or {}).get("final")
        if final is not None and not isinstance(final, dict):
            warnings.warn(f"{run / SUMMARY_FILE}: 'final' is not an object "
                          f"({json_type(final)}): run {cell.key} left out", stacklevel=3)  # fmt: skip
            continue
        final = final or {}
        last = r.event(None) if r.n_events else {}
        row = {"key": cell.key, "folder": cell.folder}
        row.update({a: _axis_value(cell.axes.get(a, cell.settings.get(a))) for a in state.axes})
        need_topo = []
        for m in metrics:
            if m in final or m in last:
                value, where = (final[m], SUMMARY_FILE) if m in final else (last[m], EVENTS_FILE)
                row[m] = _number(value)
                if value is not None and not math.isfinite(row[m]):  # null: no value
                    unusable.setdefault(m, []).append(f"{run / where} ({value!r})")
            elif m in topo_known:
                need_topo.append(m)
            else:
                row[m] = math.nan
                continue
            seen.add(m)
        if need_topo:
            row.update(_topology(run, need_topo))
            seen.update(need_topo)
        rows.append(row)
    for m, files in unusable.items():
        more = f", and {len(files) - 3} more" if len(files) > 3 else ""
        warnings.warn(f"{m} is not a finite number in {len(files)} of {len(rows)} runs (left "
                      f"out of its mean, std and n): {', '.join(files[:3])}{more}",
                      stacklevel=3)  # fmt: skip
    unknown = [m for m in metrics if m not in seen]
    if rows and unknown:
        raise MaskValidationError(
            f"{state.path}: no run has {', '.join(map(repr, unknown))}: not a final metric "
            "(summary.json), a mask event field (events.jsonl) nor a topology metric "
            "(masktopo analyze --list-metrics)"
        )
    columns = ["key", "folder", *state.axes, *metrics]
    df = pd.DataFrame(rows, columns=columns)
    for a in state.axes:  # ints stay ints beside a cell without the axis (None there, not NaN)
        df[a] = pd.Series([r.get(a) for r in rows], index=df.index, dtype=object)
    return df


def _axis_value(v):
    """An axis value as a table cell: lists as comma-joined text (hashable for grouping)."""
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return v


def summarize(
    path: str | os.PathLike,
    by: Iterable[str] | None = None,
    metrics: Sequence[str] = ("test_acc",),
) -> pd.DataFrame:
    """Mean, standard deviation and count of ``metrics`` per group of finished runs.

    Parameters
    ----------
    path : path
        A sweep folder (``masktopo sweep ... --out PATH``).
    by : iterable of str, optional
        Axes to group by (default: every axis of the sweep but ``seed``). An empty list groups
        every run into one row.
    metrics : sequence of str
        As :func:`run_table`.

    Returns
    -------
    pandas.DataFrame
        One row per group (in the order of first appearance in the grid), the ``by`` columns,
        ``runs`` (finished runs in the group), then ``<metric>_mean``, ``<metric>_std`` (sample
        std, ``ddof=1``; NaN below two values) and ``<metric>_n`` per metric.
        ``df.attrs["unfinished"]``: the number of the sweep's runs in the table's absence by
        state (``failed``, ``started``, ``new``; only the states that occur).
    """
    state = read_sweep(path)
    metrics = list(metrics)
    if not metrics:
        raise MaskValidationError("summarize needs at least one metric")
    by = [a for a in state.axes if a != SEED_AXIS] if by is None else list(by)
    unknown = [a for a in by if a not in state.axes]
    if unknown:
        raise MaskValidationError(f"{state.path}: unknown axis {', '.join(map(repr, unknown))}; "
                                  f"the sweep's axes: {', '.join(state.axes)}")  # fmt: skip
    runs = _rows(state, metrics)
    unfinished: dict[str, int] = {}
    for cell in state.cells:
        st = state.state(cell)
        if st != "done":
            unfinished[st] = unfinished.get(st, 0) + 1
    out_cols = [*by, "runs"]
    for m in metrics:
        out_cols += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    if runs.empty:
        df = pd.DataFrame(columns=out_cols)
        df.attrs["unfinished"] = unfinished
        return df
    groups: dict[tuple, list[int]] = {}
    for i, row in runs.iterrows():
        groups.setdefault(tuple(_key(row[a]) for a in by), []).append(i)
    records = []
    for _, idx in groups.items():
        first = runs.loc[idx[0]]
        rec = {a: first[a] for a in by}
        rec["runs"] = len(idx)
        for m in metrics:
            v = runs.loc[idx, m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            rec[f"{m}_mean"] = float(v.mean()) if v.size else math.nan
            rec[f"{m}_std"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
            rec[f"{m}_n"] = int(v.size)
        records.append(rec)
    df = pd.DataFrame(records, columns=out_cols)
    for a in by:
        df[a] = pd.Series([r[a] for r in records], index=df.index, dtype=object)
    df.attrs["unfinished"] = unfinished
    return df


def _key(v):
    return (None,) if _missing(v) else (v,)


def _pm(mean: float, std: float, scale: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def format_summary(df: pd.DataFrame, metrics: Sequence[str], *, percent: bool = True,
                   digits: int = 2) -> tuple[list[str], list[list]]:  # fmt: skip
    """The summary as text cells: the group columns, ``n``, and one ``mean ± std`` column per
    metric (accuracies in percent when ``percent``; other metrics with 4 significant digits).
    ``n`` is the number of runs in the group; a metric defined for fewer of them says so
    (``(n=2)``), and ``n/a`` for none. An axis the group's cells do not set shows as ``-``."""
    groups = [c for c in df.columns
              if c != "runs" and not c.endswith(("_mean", "_std", "_n"))]  # fmt: skip
    header = [*groups, "n"]
    for m in metrics:
        header.append(f"{m} (%)" if percent and m.endswith("_acc") else m)
    rows = []
    for _, r in df.iterrows():
        runs = int(r["runs"])
        cells = ["-" if _missing(r[g]) else r[g] for g in groups] + [runs]
        for m in metrics:
            mean, std, n = r[f"{m}_mean"], r[f"{m}_std"], int(r[f"{m}_n"])
            if percent and m.endswith("_acc"):
                text = _pm(mean, std, 100.0, digits)
            elif not math.isfinite(mean):
                text = "n/a"
            else:
                text = f"{mean:.4g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")
            if 0 < n < runs:
                text += f" (n={n})"
            cells.append(text)
        rows.append(cells)
    return header, rows


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
