"""Any masktopo input: a mask file (:mod:`masktopo.store`), a run directory
(:mod:`masktopo.runs`) or a Hugging Face model folder (:mod:`masktopo.store.hf_folder`: masks
from the nonzero weights). :func:`load` and :func:`info` are ``masktopo.load`` and
``masktopo.info``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from typing import Any

from .errors import MaskFileError
from .files import input_path
from .masks import MaskSet
from .runs import read_run
from .runs.layout import MASKS_DIR, SEARCH_MASKS_FORMAT
from .runs.reader import check_event_arg
from .store import describe, read_file
from .store.hf_folder import is_hf_folder, open_source

__all__ = ["info", "load", "select_layers"]


def load(
    path: str | os.PathLike,
    *,
    event: int | None = None,
    zeros_as_mask: bool = False,
    weights: bool = True,
    layers: Sequence[str] | None = None,
    include: Sequence[str] = (),
) -> MaskSet:
    """Read a mask file or a run directory into a :class:`MaskSet`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` or ``.npz`` mask file, a PyTorch checkpoint (``.pt``, ``.pth``,
        ``.ckpt``, ``.bin``; read with ``weights_only=True``), a run directory, or a Hugging Face
        model folder (``config.json`` with ``model.safetensors`` or shards and their index, or
        else ``pytorch_model.bin`` or its shards, memory-mapped: its linear layers, masks from
        their nonzero weights; docs/llm.md).
    event : int, optional
        For a run directory: the event to load (its number, or counting from the end when
        negative). The last event when None.
    zeros_as_mask : bool
        For files without masks: each 2-D or 4-D floating-point ``*.weight`` tensor defines a mask
        by its nonzero entries (the weights are kept). Ignored when the file has masks.
    weights : bool
        Attach the file's weights, when it has them. False does not attach them (nor, where the
        format allows, read them); their shapes are checked all the same.
    layers : str or sequence of str, optional
        Glob patterns on layer names (:mod:`fnmatch`; ``*`` matches dots too): only matching
        layers are kept. A model folder's other tensors are never read.
    include : sequence of str
        For a model folder: tensor classes kept besides the linear layers, ``"embeddings"``
        and ``"head"`` (:func:`masktopo.store.hf_folder.classify`).

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
    layers, include = _one_or_more(layers), _one_or_more(include)
    if is_hf_folder(p):
        if event is not None:
            raise MaskFileError(p, "event= (command line: --event) selects an event of a run "
                                "directory, but this is a model folder")  # fmt: skip
        src = open_source(p, layers=layers, include=include)
        masks, wts = {}, {}
        for name, mask, w in src.iter_layers():
            masks[name] = mask
            wts[name] = w
        meta = {"source": {"path": str(p), "format": "hf_folder", "layout": "zeros_as_mask"}}
        return MaskSet(masks, None, wts if weights else None, meta=meta)
    if p.is_dir():
        return select_layers(read_run(p).load(event=event, weights=weights), layers, p)
    if event is not None:
        raise MaskFileError(
            p,
            "event= (command line: --event) selects an event of a run directory, but this is a file",
        )
    _refuse_search_masks(p)
    ms = read_file(p, zeros_as_mask=zeros_as_mask, weights=weights)[0]
    return select_layers(ms, layers, p)


def _one_or_more(names):
    """A string as one pattern or class, not one per character."""
    return [names] if isinstance(names, str) else names


def select_layers(ms: MaskSet, patterns: Sequence[str] | None, path=None) -> MaskSet:
    """The layers of ``ms`` whose names match one of the glob ``patterns`` (all when None).

    Raises
    ------
    MaskFileError
        When no layer matches (naming ``path``).
    """
    if not patterns:
        return ms
    if isinstance(patterns, str):  # one pattern, not one per character ("fc*" matched all)
        patterns = [patterns]
    names = [n for n in ms if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    if not names:
        raise MaskFileError(path or "<masks>", f"no layer matches --layers {', '.join(patterns)}")
    return ms.select(names)


def info(path: str | os.PathLike, *, zeros_as_mask: bool = False,
         layers: Sequence[str] | None = None, include: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Describe a mask file or run directory without attaching weights.

    Masks and the file's structure are fully checked; weight values are not (:func:`load` does).

    Parameters
    ----------
    path : str or os.PathLike
        A mask file, a PyTorch checkpoint or a run directory, as for :func:`load`.
    zeros_as_mask, layers, include
        As for :func:`load`.

    Returns
    -------
    dict
        ``path``, ``format`` (``"safetensors"``, ``"npz"``, ``"torch"`` or ``"run"``),
        ``n_layers``, ``layers`` (one dict per layer: ``name``, ``kind``, ``shape`` as a list,
        ``nnz``, ``numel``, ``density``), ``nnz``, ``numel``, ``density`` (global),
        ``has_weights``, ``meta``; for a run directory also ``n_events``, ``event`` (the
        number of the event described: the last) and ``kind``, and for a ``masktopo prune``
        run ``solves`` (``event``, ``method``, ``sparsity``, ``stage``, ``stages`` of each).
        For a model folder (read tensor by tensor) each layer also has ``dtype``, ``class``,
        ``nm`` and the degree statistics of
        :func:`masktopo.analysis.structure.structure_columns`, and ``skipped`` lists the tensors
        not analyzed (``name``, ``class``, ``shape``, ``dtype``).
    """
    p = input_path(path)
    layers, include = _one_or_more(layers), _one_or_more(include)
    if is_hf_folder(p):
        return _folder_info(p, layers, include)
    if p.is_dir():
        run = read_run(p)
        ms, has_weights = run.read(None, weights=False)
        extra = {"n_events": run.n_events, "event": run.events[-1]["event"], "kind": run.kind}
        if run.kind == "prune":  # independent solves, not a trajectory: list them
            extra["solves"] = [{k: e.get(k) for k in ("event", "method", "sparsity", "stage",
                                                      "stages")}
                               for e in run.events if e.get("kind") == "prune"]  # fmt: skip
        return {**describe(select_layers(ms, layers, p), p, "run", has_weights), **extra}
    _refuse_search_masks(p)
    ms, fmt, has_weights = read_file(p, zeros_as_mask=zeros_as_mask, weights=False)
    return describe(select_layers(ms, layers, p), p, fmt, has_weights)


def _refuse_search_masks(p) -> None:
    """A part of a search's masks (``masks/part-NNNNNN.safetensors`` of ``masktopo search``)
    holds the masks of many runs, each tensor stacked over them, not one mask set: say so and
    what reads it. Any other file (also an unreadable one) is left to its reader."""
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(p), framework="np") as f:
            if (f.metadata() or {}).get("format") != SEARCH_MASKS_FORMAT:
                return
            keys = list(f.keys())
            shapes = {k: f.get_slice(k).get_shape() for k in keys if k.endswith(".weight.mask")}
            n = f.get_slice("run").get_shape()[0] if "run" in keys else None
    except (SafetensorError, OSError, ValueError, IndexError):
        return
    folder = p.parent.parent if p.parent.name == MASKS_DIR else "SEARCH_DIR"
    runs = f"{n} run{'s' if n != 1 else ''}" if n is not None else "several runs"
    layers = ", ".join(f"{k.removesuffix('.mask')} {'x'.join(map(str, v[1:]))}"
                       for k, v in shapes.items())  # fmt: skip
    raise MaskFileError(p, f"is a part of a search's masks ({SEARCH_MASKS_FORMAT}), not one mask "
                           f"set: the masks, weights and biases of {runs} at or above the "
                           f"target, each layer's tensors stacked over the runs ({layers}); "
                           f"masktopo.search.read_search_masks({str(folder)!r}) yields each "
                           "run's MaskSet (masktopo.analysis.analyze takes one)")  # fmt: skip


def _folder_info(p, layers, include) -> dict[str, Any]:
    """:func:`info` of a model folder: one tensor in memory at a time."""
    from .analysis.structure import structure_columns

    src = open_source(p, layers=layers, include=include)
    rows = []
    for e in src.layers:
        _, mask, _ = src.layer(e)
        nnz = int(mask.count_nonzero())
        rows.append({"name": e.name, "kind": "conv" if len(e.shape) == 4 else "linear",
                     "shape": list(e.layer_shape), "nnz": nnz, "numel": e.numel,
                     "density": nnz / e.numel, "dtype": e.dtype, "class": e.cls,
                     **structure_columns(mask)})  # fmt: skip
        del mask
    nnz = sum(r["nnz"] for r in rows)
    numel = sum(r["numel"] for r in rows)
    skipped = [{"name": e.name, "class": e.cls, "shape": list(e.shape), "dtype": e.dtype}
               for e in src.skipped]  # fmt: skip
    return {"path": str(p), "format": "hf_folder", "n_layers": len(rows), "layers": rows,
            "nnz": nnz, "numel": numel, "density": nnz / numel, "has_weights": True,
            "meta": {"config": {k: src.config[k] for k in ("model_type", "architectures")
                                if k in src.config}},
            "n_files": len(src.files), "skipped": skipped}  # fmt: skip
