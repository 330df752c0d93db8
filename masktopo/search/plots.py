"""Figures of a search or a pruning benchmark (``masktopo plot SEARCH_OR_BENCH --out DIR``).

* search: the best train accuracy over settings and supports at each weight nnz (the
  "sparsest model at accuracy X" curve), the target as a line;
* prune-bench: per width, the best accuracy over seeds and settings against the measured
  weight nnz, one line per method; and the mean number of ineffective weights (kept weights on
  no input→output path) against K.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot_folder"]


def _save(fig, out: Path, stem: str, formats) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    files = [save_figure(fig, out / f"{stem}.{fmt}") for fmt in formats]
    plt.close(fig)
    return files


def plot_folder(
    path: str | os.PathLike, out: str | os.PathLike, *, formats=("png",), title: str | None = None
) -> list[Path]:
    """Draw the figures of a search or prune-bench folder into ``out``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runs import read_run_json, run_kind

    path, out = Path(path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = read_run_json(path)["config"].get("target", 0.95)
    if run_kind(path) == "search":
        from .runner import read_results

        df = read_results(path)
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        if len(df):
            best = df.groupby("weight_nnz")["accuracy"].max()
            ax.plot(best.index, best.values, "o-", label="search (best over supports, settings)")
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
        ax.set_xlabel("weight nnz")
        ax.set_ylabel("train accuracy")
        ax.set_title(title or f"search: {path.name}")
        ax.legend()
        return _save(fig, out, "search-accuracy-vs-nnz", formats)
    from .prune import read_bench

    df = read_bench(path)
    files: list[Path] = []
    for width, g in df.groupby("width", sort=True):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        for method, m in g.groupby("method", sort=True):
            best = m.groupby("weight_nnz")["accuracy"].max()
            a1.plot(best.index, best.values, "o-", ms=3, label=method)
            ineff = (m["weight_nnz"] - m["effective_nnz"]).groupby(m["k"]).mean()
            a2.plot(ineff.index, ineff.values, "o-", ms=3, label=method)
        a1.axhline(target, color="grey", ls="--", lw=1)
        a1.set(xlabel="weight nnz (measured)", ylabel="train accuracy (best over seeds)",
               title=title or f"pruning, width {width}")  # fmt: skip
        a2.set(xlabel="K", ylabel="ineffective weights (mean)", title="weights on no path")
        a1.legend(fontsize=7)
        files += _save(fig, out, f"prune-width{width}", formats)
    return files
