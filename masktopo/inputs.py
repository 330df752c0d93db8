"""Any masktopo input: a mask file (:mod:`masktopo.store`) or a run directory
(:mod:`masktopo.runs`). :func:`load` and :func:`info` are ``masktopo.load`` and ``masktopo.info``.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import MaskFileError
from .files import input_path
from .masks import MaskSet
from .runs import read_run
from .runs.reader import check_event_arg
from .store import describe, read_file

__all__ = ["info", "load"]


def load(
    path: str | os.PathLike,
    *,
    event: int | None = None,
    zeros_as_mask: bool = False,
    weights: bool = True,
) -> MaskSet:
    """Read a mask file or a run directory into a :class:`MaskSet`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` or ``.npz`` mask file, a PyTorch checkpoint (``.pt``, ``.pth``,
        ``.ckpt``, ``.bin``; read with ``weights_only=True``) or a run directory.
    event : int, optional
        For a run directory: the event to load (its number, or counting from the end when
        negative). The last event when None.
    zeros_as_mask : bool
        For files without masks: each 2-D or 4-D floating-point ``*.weight`` tensor defines a mask
        by its nonzero entries (the weights are kept). Ignored when the file has masks.
    weights : bool
        Attach the file's weights, when it has them. False does not attach them (nor, where the
        format allows, read them); their shapes are checked all the same.

    Returns
    -------
    MaskSet
        On the CPU, in the file's layer order. ``meta`` holds the file's metadata; for foreign
        files ``meta["source"]`` says how the file was interpreted, and for run directories
        ``meta["event"]`` is the event's line of ``events.jsonl``.

    Raises
    ------
    MaskFileError
        For a missing, truncated, corrupt or unsupported file, a checkpoint that would need to
        unpickle Python objects, or invalid masks or weights in it; the message names the file and
        the layer or line.

    Examples
    --------
    >>> ms = load("pruned.pt")  # doctest: +SKIP
    >>> ms = load("runs/rigl-0", event=0, weights=False)  # doctest: +SKIP
    """
    p = input_path(path)
    check_event_arg(event)
    if p.is_dir():
        return read_run(p).load(event=event, weights=weights)
    if event is not None:
        raise MaskFileError(
            p,
            "event= (command line: --event) selects an event of a run directory, but this is a file",
        )
    return read_file(p, zeros_as_mask=zeros_as_mask, weights=weights)[0]


def info(path: str | os.PathLike, *, zeros_as_mask: bool = False) -> dict[str, Any]:
    """Describe a mask file or run directory without attaching weights.

    Masks and the file's structure are fully checked; weight values are not (:func:`load` does).

    Parameters
    ----------
    path : str or os.PathLike
        A mask file, a PyTorch checkpoint or a run directory, as for :func:`load`.
    zeros_as_mask : bool
        As for :func:`load`.

    Returns
    -------
    dict
        ``path``, ``format`` (``"safetensors"``, ``"npz"``, ``"torch"`` or ``"run"``),
        ``n_layers``, ``layers`` (one dict per layer: ``name``, ``kind``, ``shape`` as a list,
        ``nnz``, ``numel``, ``density``), ``nnz``, ``numel``, ``density`` (global),
        ``has_weights``, ``meta``; for a run directory also ``n_events`` and ``event`` (the
        number of the event described: the last).
    """
    p = input_path(path)
    if p.is_dir():
        run = read_run(p)
        ms, has_weights = run.read(None, weights=False)
        extra = {"n_events": run.n_events, "event": run.events[-1]["event"]}
        return {**describe(ms, p, "run", has_weights), **extra}
    ms, fmt, has_weights = read_file(p, zeros_as_mask=zeros_as_mask, weights=False)
    return describe(ms, p, fmt, has_weights)
