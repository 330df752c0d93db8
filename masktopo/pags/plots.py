"""Figures of a PAGS run (``masktopo plot PAGS_OUT --out DIR``).

One figure per metric (default ``network_score``) against the candidate number ``t`` (``t = 0``
is the base mask): a dot per candidate, the best mask's value so far as a line (for the network
score and the density, which the run records for the best after each candidate), and the base
mask's value as a dashed line; below it, the layers accepted from each candidate into the best
mask. The candidates' values are those of ``candidates.parquet``: exact for the layers accepted
from a candidate, ranking estimates for the others under the default ranking-then-exact scoring
(:mod:`masktopo.pags.engine`; measured on ResNet-18 ERK 1 %: network scores 2 % below the exact
ones on average, 3 % at most), so the dots are estimates (the legend says so; ``--exact`` runs
give exact dots), the line and the base exact. The full-spectrum values (``network_score``,
``fs_*``) are estimated only with ``masktopo pags --estimates``; without it their dots are
missing (the legend says so), while ``imdb_mean`` is estimated in every run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MaskFileError, MaskValidationError
from ..plots import BLACK, FORMATS, GREY, OKABE_ITO, STYLE, save_figure

__all__ = ["plot_pags"]

#: The best mask's trajectory recorded for these candidate columns.
_BEST = {"network_score": "best_network_score", "density": "best_density"}
_LABELS = {
    "network_score": "network score S (mean full-spectrum distance)",
    "fs_mean": "mean full-spectrum distance",
    "imdb_mean": "mean IMDB Ramanujan gap",
    "density": "density",
}


def _table(path: Path):
    import pandas as pd

    from ..runs.layout import CANDIDATES_FILE

    f = path / CANDIDATES_FILE
    if not f.is_file():
        raise MaskFileError(path, f"holds no {CANDIDATES_FILE} yet: no candidate was scored")
    try:
        df = pd.read_parquet(f)
    except (OSError, ValueError) as e:
        raise MaskFileError(f, f"cannot be read as a table ({type(e).__name__})") from None
    if df.empty or "t" not in df:
        raise MaskFileError(f, "holds no candidate rows")
    return df.sort_values("t", kind="stable")


def plot_pags(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    formats: Sequence[str] = ("png",),
    title: str | None = None,
) -> list[Path]:
    """Draw the figures of a PAGS output folder into ``out`` (module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The folder ``masktopo pags --out`` wrote (finished or not).
    out : str or os.PathLike
        Folder for the figures (created).
    metrics : sequence of str, optional
        Numeric columns of ``candidates.parquet`` to draw (``network_score``, ``fs_mean``,
        ``imdb_mean``, ``density``, ...); default ``network_score``.
    formats : sequence of str
        File formats (:data:`masktopo.plots.FORMATS`).
    title : str, optional
        Figure title; ``{}`` is replaced by the default one, ``""`` draws none.

    Returns
    -------
    list of pathlib.Path
        The files written, ``pags-<metric>.<format>``.

    Raises
    ------
    MaskFileError
        When the folder has no readable candidate table.
    MaskValidationError
        For a metric that is not a numeric column of the table.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runs import read_run_json

    path, out = Path(path), Path(out)
    df = _table(path)
    exact = bool((read_run_json(path).get("config") or {}).get("exact"))
    numeric = [c for c in df.columns if c != "t" and np.issubdtype(df[c].dtype, np.number)]
    names = list(metrics or ["network_score"])
    for name in names:
        if name not in numeric:
            raise MaskValidationError(
                f"{path}: {name!r} is not a numeric column of the candidate table; choose from "
                f"{', '.join(numeric)}"
            )
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise MaskValidationError(f"unknown figure format {bad[0]!r} (choose from {FORMATS})")
    out.mkdir(parents=True, exist_ok=True)
    t = df["t"].to_numpy()
    files: list[Path] = []
    for name in names:
        default = f"PAGS: {_LABELS.get(name, name)} of {len(df) - 1:,} candidates"
        with plt.rc_context(STYLE):
            fig, (ax, acc) = plt.subplots(
                2, 1, figsize=(6.4, 4.8), sharex=True, height_ratios=(3, 1)
            )
            values = df[name].to_numpy(dtype=float)[1:]
            ax.plot(t[1:], values, ".", ms=3, color=GREY, label=_dots_label(values, exact))
            base = float(df[name].iloc[0])
            ax.axhline(base, color=BLACK, ls="--", lw=0.8, label=f"base mask ({base:.4g})")
            if name in _BEST and _BEST[name] in df:
                ax.step(t, df[_BEST[name]].to_numpy(), where="post", color=OKABE_ITO[4],
                        lw=1.5, label="best mask so far")  # fmt: skip
            ax.set_ylabel(_LABELS.get(name, name.replace("_", " ")))
            ax.legend(loc="best")
            if "accepted_layers" in df:
                acc.bar(t, df["accepted_layers"].to_numpy(), width=1.0, color=OKABE_ITO[3])
            acc.set_ylabel("layers\naccepted")
            acc.set_xlabel("candidate t (0: the base mask)")
            if title != "":
                fig.suptitle(default if title is None else title.replace("{}", default))
            fig.tight_layout()
            for fmt in formats:
                files.append(save_figure(fig, out / f"pags-{name}.{fmt}"))
            plt.close(fig)
    return files


def _dots_label(values: np.ndarray, exact: bool) -> str:
    """The candidates' legend entry: exact, estimated, or not estimated (a run without
    ``--estimates`` has no full-spectrum values for most candidate layers)."""
    if exact:
        return "candidates"
    missing = np.isnan(values)
    if missing.size and missing.all():
        return "candidates: not estimated (masktopo pags --estimates)"
    if missing.any():
        return "candidates (where estimated; masktopo pags --estimates: all)"
    return "candidates (ranking estimates; --exact: exact)"
