"""Figures of a sweep: a final metric against another, mean ± std over the seeds of each cell.

:func:`plot_sweep` draws, for every group of runs (the sweep's axes but ``seed``), one point at
the mean of ``x`` and ``y`` with error bars of one sample standard deviation over its runs; the
points of one value of the *series* axis (default: ``method`` when the sweep has it, else the
first axis with several values) share a colour and marker and are joined in the order of the
remaining axes' values (ΔT for E1; else of ``x``);
each point is labelled with the values of the remaining axes (``update_interval=100``). The
default ``x`` is ``R_s`` (ITOP's in-time over-parameterization rate, E1's axis) when every run
has it, else the first numeric axis.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checks import is_number
from ..errors import MaskValidationError
from ..plots import FORMATS, OKABE_ITO, STYLE, save_figure
from .runner import read_sweep
from .summary import SEED_AXIS, run_table

__all__ = ["plot_sweep"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LABELS = {
    "test_acc": "test accuracy of the final model (%)",
    "train_acc": "training accuracy, last epoch (%)",
    "val_acc": "validation accuracy, final model (%)",
    "R_s": "in-time over-parameterization rate $R_s$ (fraction of weights ever active)",
    "density": "density (fraction of weights kept)",
}


def _label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " "))


def _numeric(values) -> bool:
    return all(is_number(v) for v in values)


def plot_sweep(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    y: str = "test_acc",
    x: str | None = None,
    series: str | None = None,
    formats: Sequence[str] = ("png",),
    title: str | None = None,
) -> list[Path]:
    """Draw ``y`` against ``x`` over the groups of a sweep's finished runs.

    Parameters
    ----------
    path : path
        A sweep folder.
    out_dir : path
        An existing folder; the figure is ``sweep-<y>-vs-<x>.<format>``.
    y, x : str
        Metrics or axes (``x`` default: ``R_s`` when runs have it, else the first numeric
        axis but ``seed``). A metric is looked up as :func:`~masktopo.sweep.run_table` does.
    series : str, optional
        The axis whose values get one colour each (default ``method``, else the first axis with
        several values other than ``x``).
    formats : sequence of str
        ``png``, ``svg``, ``pdf``.
    title : str, optional
        The figure's title ('' for none; ``{}`` stands for the default).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    MaskValidationError
        No finished run, or no axis or metric to use as ``x``.
    """
    import matplotlib
    from matplotlib.figure import Figure

    state = read_sweep(path)
    axes = [a for a in state.axes if a != SEED_AXIS]
    if x is None:  # one read of the runs: R_s when they have it, else the first numeric axis
        try:
            runs = run_table(path, [y, "R_s"])
            has_rs = bool(np.isfinite(runs["R_s"].to_numpy(float)).any())
        except MaskValidationError:  # no run has R_s
            runs, has_rs = run_table(path, [y]), False
        if runs.empty:
            raise MaskValidationError(f"{state.path}: no finished run to draw")
        numeric = [a for a in axes if _numeric(runs[a].tolist())]
        x = "R_s" if has_rs else (numeric[0] if numeric else None)
        if x is None:
            raise MaskValidationError(f"{state.path}: no numeric axis nor R_s to draw against; "
                                      "name one (--against NAME, or x=)")  # fmt: skip
    else:
        runs = run_table(path, [y] + ([x] if x not in state.axes else []))
        if runs.empty:
            raise MaskValidationError(f"{state.path}: no finished run to draw")
    group_axes = [a for a in axes if a != x]
    if series is None:
        several = [a for a in group_axes if runs[a].nunique() > 1]
        series = "method" if "method" in several else (several[0] if several else None)
    rest = [a for a in group_axes if a != series and runs[a].nunique() > 1]
    scale_y = 100.0 if y.endswith("_acc") else 1.0
    scale_x = 100.0 if x.endswith("_acc") else 1.0
    groups = runs.groupby(group_axes, sort=False, dropna=False) if group_axes else [((), runs)]
    points, left_out = [], []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = {a: v for a, v in zip(group_axes, key, strict=True)
                 if not (v is None or (isinstance(v, float) and v != v))}  # fmt: skip
        xs = g[x].to_numpy(float) * scale_x
        ys = g[y].to_numpy(float) * scale_y
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            left_out.append(", ".join(f"{a}={v}" for a, v in where.items()) or "all")
            continue
        xs, ys = xs[ok], ys[ok]
        points.append({
            "series": where.get(series) if series else None,
            "label": ", ".join(f"{a}={_show(where[a])}" for a in rest if a in where),
            "order": tuple(_order(where.get(a)) for a in rest),
            "x": xs.mean(), "xerr": xs.std(ddof=1) if xs.size > 1 else 0.0,
            "y": ys.mean(), "yerr": ys.std(ddof=1) if ys.size > 1 else 0.0, "n": int(ok.sum()),
        })  # fmt: skip
    if not points:
        raise MaskValidationError(f"{state.path}: no run has finite {x} and {y}")
    if left_out:
        import warnings

        warnings.warn(f"{len(left_out)} cell(s) without a value of {x} or {y} are not drawn: "
                      f"{'; '.join(left_out)}", stacklevel=2)  # fmt: skip
    names = list(dict.fromkeys(p["series"] for p in points))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for i, name in enumerate(names):
            # joined along the other axes' values (ΔT for E1), else along x
            pts = sorted((p for p in points if p["series"] == name),
                         key=lambda p: (p["order"], p["x"]))  # fmt: skip
            colour, marker = OKABE_ITO[i % len(OKABE_ITO)], _MARKERS[i % len(_MARKERS)]
            ax.errorbar([p["x"] for p in pts], [p["y"] for p in pts],
                        xerr=[p["xerr"] for p in pts], yerr=[p["yerr"] for p in pts],
                        color=colour, marker=marker, linestyle="-", linewidth=1.0, markersize=5,
                        capsize=2.5, elinewidth=0.8,
                        label=f"{series}={name}" if series else None)  # fmt: skip
            if len(pts) <= 12:
                for p in pts:
                    if p["label"]:
                        ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points",
                                    xytext=(4, 4), fontsize=6.5, color=colour)  # fmt: skip
        ax.set_xlabel(_label(x) + (" (%)" if scale_x != 1 and "(%)" not in _label(x) else ""))
        ax.set_ylabel(_label(y))
        n = sorted({p["n"] for p in points})
        n_text = f"n = {n[0]}" if len(n) == 1 else f"n = {n[0]}–{n[-1]}"
        default = f"{y} vs {x}: mean ± std over seeds ({n_text} runs per point)"
        if title is None:
            ax.set_title(default)
        elif title:
            ax.set_title(title.replace("{}", default))
        if series:
            ax.legend(loc="best")
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    out = Path(out_dir)
    files = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise MaskValidationError(f"unknown figure format {fmt!r}; known: {', '.join(FORMATS)}")
        files.append(save_figure(fig, out / f"sweep-{_stem(y)}-vs-{_stem(x)}.{fmt}"))
    return files


def _show(v) -> str:
    """An axis value as a label: 100 rather than 100.0 (pandas makes a column with a missing
    value float)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _order(v):
    """A sort key for axis values of mixed kinds: numbers by value, then text."""
    if is_number(v):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
