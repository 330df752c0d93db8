"""The figures of result folders that are not training runs: one registry for ``masktopo plot``
and ``masktopo report``.

A sweep folder (``sweep.json``), a search or pruning-benchmark folder, a PAGS output folder and
a ``masktopo prune`` run directory each have figures of their own instead of the metric
trajectories of a training run. Each kind is one :class:`FolderFigures` entry in
:data:`FOLDERS`: how to recognise the folder, how to draw its figures into a directory, and the
heading of its section in a report. ``masktopo plot`` draws the entry of the folder it is given
(:func:`for_folder`); ``masktopo report`` draws the entry of a run's kind (:func:`for_kind`) in
the run's own section. Adding a kind of result folder is one drawing function and one entry
here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FOLDERS", "FolderFigures", "draw", "for_folder", "for_kind"]


@dataclass(frozen=True)
class FolderFigures:
    """One kind of result folder and its figures.

    Attributes
    ----------
    name : str
        What the folder is (``"sweep"``, ``"search"``, ``"pags"``, ``"prune"``).
    kinds : tuple of str
        The ``kind`` entries of run.json that mark such a folder (empty: recognised by
        ``marker`` alone).
    draw : callable
        ``draw(path, out, *, formats, title, metrics, against) -> list of Path``: the figures
        of the folder ``path`` written into the directory ``out`` (``metrics``: the y values
        where the kind has a choice, None for its default; ``against``: the x axis where it
        has one).
    headings : dict of str to str
        The report section's heading per run kind (kinds without one are not drawn in reports:
        a sweep is refused there, a PAGS folder has a section of its own).
    marker : str, optional
        A file whose presence marks the folder (a sweep's ``sweep.json``).
    """

    name: str
    kinds: tuple[str, ...]
    draw: Callable[..., list[Path]]
    headings: dict[str, str]
    marker: str | None = None

    def is_it(self, path: Path) -> bool:
        """Whether the directory ``path`` is a folder of this kind."""
        from .runs import run_kind

        if not path.is_dir():
            return False
        if self.marker is not None and (path / self.marker).is_file():
            return True
        return bool(self.kinds) and run_kind(path) in self.kinds


def _sweep(path, out, *, formats, title, metrics=None, against=None) -> list[Path]:
    from .sweep.plots import plot_sweep

    files: list[Path] = []
    for y in metrics or ["test_acc"]:
        files += plot_sweep(path, out, y=y, x=against, formats=formats, title=title)
    return files


def _search(path, out, *, formats, title, metrics=None, against=None) -> list[Path]:
    from .search.plots import plot_folder

    return plot_folder(path, out, formats=formats, title=title)


def _pags(path, out, *, formats, title, metrics=None, against=None) -> list[Path]:
    from .pags.plots import plot_pags

    return plot_pags(path, out, metrics=metrics, formats=formats, title=title)


def _prune(path, out, *, formats, title, metrics=None, against=None) -> list[Path]:
    from .prune.plots import plot_prune

    return plot_prune(path, out, formats=formats, title=title)


#: Every kind of result folder with figures of its own, in the order ``masktopo plot`` tries them.
FOLDERS: tuple[FolderFigures, ...] = (
    FolderFigures("sweep", (), _sweep, {}, marker="sweep.json"),  # sweep.runner.SWEEP_FILE
    FolderFigures(
        "search",
        ("search", "prune-bench"),
        _search,
        {"search": "search", "prune-bench": "pruning benchmark"},
    ),
    FolderFigures("pags", ("pags",), _pags, {}),
    FolderFigures(
        "prune",
        ("prune",),
        _prune,
        {"prune": "one-shot pruning: every method against the sparsity"},
    ),
)


def for_folder(path: str | os.PathLike) -> FolderFigures | None:
    """The entry of the result folder ``path``, or None (a training run, a mask file, ...)."""
    path = Path(path)
    return next((f for f in FOLDERS if f.is_it(path)), None)


def for_kind(kind: str) -> FolderFigures | None:
    """The entry drawn in a report for a run of ``kind``, or None."""
    return next((f for f in FOLDERS if kind in f.headings), None)


def draw(entry: FolderFigures, path: str | os.PathLike, out: str | os.PathLike, *,
         formats: Sequence[str] = ("png",), title: str | None = None,
         metrics: Sequence[str] | None = None, against: str | None = None) -> list[Path]:  # fmt: skip
    """``entry.draw`` with the keyword defaults filled in."""
    return entry.draw(Path(path), Path(out), formats=tuple(formats), title=title,
                      metrics=None if metrics is None else list(metrics), against=against)  # fmt: skip
