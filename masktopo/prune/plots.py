"""Figures of a ``masktopo prune`` run (``masktopo plot PRUNED --out DIR``).

A prune run holds independent solves (each method at each sparsity, CHITA++ in stages), not a
trajectory, so its figures are drawn against the sparsity, one line per method, from the run's
table (``results.csv``):

* ``prune-accuracy``: test accuracy of each pruned network (after the BN re-estimation where the
  model has batch norm), with the input network's as a line;
* ``prune-objective``: the objective f of the local quadratic model at each solution (log
  scale; lower is better).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot_prune"]


def _table(path: Path):
    import pandas as pd

    from ..errors import MaskFileError
    from ..runs.layout import PRUNE_TABLE_FILE

    f = path / PRUNE_TABLE_FILE
    if not f.is_file():
        raise MaskFileError(path, f"holds no {PRUNE_TABLE_FILE} yet (the prune run has not "
                            "finished a solve)")  # fmt: skip
    try:
        df = pd.read_csv(f)
    except (ValueError, OSError) as e:
        raise MaskFileError(f, f"not a readable table ({e})") from None
    missing = {"method", "sparsity", "objective", "test_acc"} - set(df.columns)
    if missing or df.empty:
        what = f"lacks the columns {', '.join(sorted(missing))}" if missing else "has no rows"
        raise MaskFileError(f, what)
    return df


def plot_prune(
    path: str | os.PathLike, out: str | os.PathLike, *, formats=("png",), title: str | None = None
) -> list[Path]:
    """Draw the figures of a prune run into ``out`` (module docstring); returns the files.

    Raises
    ------
    MaskFileError
        The run has no table yet, or an unreadable one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure
    from ..runs import read_run

    path, out = Path(path), Path(out)
    df = _table(path)
    run = read_run(path)
    base = next((ev.get("test_acc") for ev in run.events if ev.get("kind") == "init"), None)
    acc = df["test_acc"]
    if "test_acc_bn" in df and df["test_acc_bn"].notna().any():
        acc = df["test_acc_bn"].fillna(df["test_acc"])
    df = df.assign(accuracy=acc)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for stem, column, ylabel, log in (
        ("prune-accuracy", "accuracy", "test accuracy (no fine-tuning)", False),
        ("prune-objective", "objective", "objective f (lower is better)", True),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        for method, rows in df.groupby("method", sort=False):
            rows = rows.sort_values("sparsity")
            ax.plot(rows["sparsity"], rows[column], "o-", label=str(method))
        if column == "accuracy" and isinstance(base, float):
            ax.axhline(base, color="grey", ls="--", lw=1, label=f"input network ({base:.4g})")
        if log and (df[column] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_ylabel(ylabel)
        ax.set_title(title if title is not None else f"{path.name}: one-shot pruning")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.extend(save_figure(fig, out / f"{stem}.{fmt}") for fmt in formats)
        plt.close(fig)
    return files
