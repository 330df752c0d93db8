"""Layer tables of models too large to hold in memory: layers read, analyzed and dropped a few at
a time (docs/llm.md).

:func:`analyze_layers` takes :class:`LayerRef` s (a name, a shape, a cost, and a function that
reads the layer's mask and weight when called) instead of a :class:`~masktopo.masks.MaskSet`.
Layers are read in chunks of :func:`~masktopo.analysis.spectral.cpu_workers` layers (one per
thread of the CPU engine), every chunk's spectra are solved by one
:func:`~masktopo.analysis.metrics.layer_metric_rows` call, and the chunk's tensors are dropped
before the next is read: the peak memory is that of a chunk, not of the model. Under
``torchrun`` the layers are split across the processes by cost and gathered on rank 0
(:mod:`masktopo.analysis.distributed`). The table is the one :func:`~masktopo.analysis.analyze`
gives for the same layers, with the structure columns of :mod:`masktopo.analysis.structure`
(N:M pattern, degree spread) before ``reason`` when ``structure=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..distributed import World
from ..errors import MaskValidationError
from ..options import Options
from .distributed import gather_rows, split_by_cost
from .metrics import INT_METRICS, layer_metric_rows, resolve_metrics
from .spectral import cpu_workers
from .structure import INT_COLUMNS, STRUCTURE_COLUMNS, structure_columns

__all__ = ["LayerRef", "analyze_layers", "refs_of_maskset", "refs_of_source"]

#: A chunk holds at most this many mask entries (unless one layer alone has more): a
#: Llama-2-7B MLP matrix (45 M entries, ~2 GB of working arrays at 50 % density) is analyzed
#: alone, attention matrices (16.8 M) two at a time, for a peak under 3 GB (docs/llm.md).
CHUNK_ENTRIES = 1 << 26


@dataclass(frozen=True)
class LayerRef:
    """One layer of a model, read when :attr:`read` is called.

    Attributes
    ----------
    name, kind : str
        Layer name and kind (``"linear"`` or ``"conv"``).
    shape : tuple of int
        The mask's shape.
    cost : float
        Predicted cost of its analysis (to split layers across processes): its entry count.
    read : callable
        ``read() -> (mask, weight or None)``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    cost: float
    read: Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


def refs_of_maskset(ms) -> list[LayerRef]:
    """:class:`LayerRef` s of the layers of a MaskSet (in memory already)."""
    ws = ms.weights if ms.has_weights else None

    def reader(name: str):
        return lambda: (ms[name], None if ws is None else ws[name])

    return [LayerRef(n, ms.kind(n), tuple(ms.shape(n)), float(ms[n].numel()), reader(n))
            for n in ms]  # fmt: skip


def refs_of_source(source) -> list[LayerRef]:
    """:class:`LayerRef` s of the analyzed tensors of a
    :class:`~masktopo.store.hf_folder.HFSource` (masks from the nonzero weights)."""

    def reader(entry):
        def read():
            _, mask, weight = source.layer(entry)
            return mask, weight

        return read

    return [LayerRef(e.name, "conv" if len(e.shape) == 4 else "linear", e.layer_shape,
                     float(e.numel), reader(e)) for e in source.layers]  # fmt: skip


def _chunks(idx: Sequence[int], refs: Sequence[LayerRef], per: int, most: float
            ) -> Iterable[list[int]]:  # fmt: skip
    chunk: list[int] = []
    entries = 0.0
    for i in idx:
        if chunk and (len(chunk) >= per or entries + refs[i].cost > most):
            yield chunk
            chunk, entries = [], 0.0
        chunk.append(i)
        entries += refs[i].cost
    if chunk:
        yield chunk


def analyze_layers(
    refs: Sequence[LayerRef],
    *,
    weights: bool = True,
    metrics: Iterable[str] | str | None = None,
    options: Options | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
    structure: bool = True,
    progress: bool = False,
    world: World | None = None,
    per_chunk: int | None = None,
    chunk_entries: int = CHUNK_ENTRIES,
    prefetch: bool | None = None,
):
    """The layer table of ``refs``, reading a few layers at a time.

    Parameters
    ----------
    refs : sequence of LayerRef
        The layers, in table order.
    weights : bool
        Read the weights for the weighted metrics (when the layers have them).
    metrics, options, device, route
        As for :func:`masktopo.analysis.analyze`. Whether the layers have weights is seen from
        the first layer read; the selection must then hold for every layer.
    structure : bool
        Add the columns of :func:`masktopo.analysis.structure.structure_columns`.
    progress : bool
        A progress bar on stderr (rank 0 only).
    world : World, optional
        The processes of a torchrun launch (:func:`~masktopo.distributed.init_world`);
        each analyzes its share of the layers, rank 0 returns the whole table.
    per_chunk : int, optional
        Layers read at once: default the CPU engine's threads
        (:func:`~masktopo.analysis.spectral.cpu_workers`) on the CPU, 8 on a GPU.
    chunk_entries : int
        A chunk holds at most this many mask entries, unless one layer has more: the bound on
        the peak memory (:data:`CHUNK_ENTRIES`; larger is faster for big layers on 2 threads,
        which then analyze two at once).
    prefetch : bool, optional
        Read the next chunk in a background thread while this one is analyzed (two chunks in
        memory at once). Default: on an accelerator (where reading the weights is a large share
        of the time), not on the CPU (whose peak memory is one chunk).

    Returns
    -------
    pandas.DataFrame or None
        The table of :func:`masktopo.analysis.analyze` (``layer``, ``layer_kind``, ``shape``, the
        metrics, the structure columns, ``reason``); None on ranks other than 0.
    """
    import pandas as pd

    if not refs:
        raise MaskValidationError("no layers to analyze")
    world = world or World()
    opts = Options() if options is None else options
    dev = torch.device("cpu" if device is None else device)
    per = per_chunk or (cpu_workers() if dev.type == "cpu" else 8)
    mine = split_by_cost([r.cost for r in refs], world.size)[world.rank]
    bar = None
    if progress and world.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="layers", unit="layer", leave=False)
    names: list[str] | None = None
    use_w: bool | None = None
    out: list[tuple[int, dict[str, Any]]] = []
    chunks = list(_chunks(mine, refs, per, chunk_entries))
    ahead = (dev.type != "cpu") if prefetch is None else prefetch
    pool = ThreadPoolExecutor(1, "masktopo-read") if ahead and len(chunks) > 1 else None

    def read(chunk):
        return [refs[i].read() for i in chunk]

    pending = pool.submit(read, chunks[0]) if pool is not None else None
    try:
        for n, chunk in enumerate(chunks):
            if pool is not None:  # this chunk's tensors, read meanwhile; the next one's begun
                items = pending.result()
                if n + 1 < len(chunks):
                    pending = pool.submit(read, chunks[n + 1])
            else:
                items = read(chunk)
            layers = []
            extra = []
            for i, (mask, weight) in zip(chunk, items, strict=True):
                if use_w is None:
                    use_w = bool(weights) and weight is not None
                    names = resolve_metrics(metrics, weighted=use_w)
                weight = weight if use_w else None
                if dev.type != "cpu":  # moved once: planned and measured there (device_plan)
                    mask = mask.to(dev)
                    weight = None if weight is None else weight.to(dev)
                layers.append((refs[i].name, mask, weight))
                extra.append(structure_columns(mask) if structure else {})
            rows = layer_metric_rows(layers, metrics=names, options=opts, device=dev, route=route)
            del layers, items
            for i, row, more in zip(chunk, rows, extra, strict=True):
                reason = row.pop("reason")
                out.append((i, {**row, **more, "reason": reason}))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    rows_all = gather_rows(world, out)
    if rows_all is None:
        return None
    if names is None:  # this rank analyzed nothing: the selection of rank 0's rows
        names = [c for c in rows_all[0] if c not in STRUCTURE_COLUMNS and c != "reason"]
    cols = [*names, *(STRUCTURE_COLUMNS if structure else ()), "reason"]
    df = pd.DataFrame(rows_all, columns=cols)
    df.insert(0, "layer", [r.name for r in refs])
    df.insert(1, "layer_kind", [r.kind for r in refs])
    df.insert(2, "shape", [list(r.shape) for r in refs])
    for col in (*INT_METRICS, *INT_COLUMNS):
        if col in df:
            df[col] = df[col].astype("Int64")
    if "is_ramanujan" in df:
        df["is_ramanujan"] = df["is_ramanujan"].astype("boolean")
    df.attrs.update(conv=opts.conv, gate=opts.gate, imdb=opts.imdb, narc=opts.narc,
                    weighted=bool(use_w) if use_w is not None else "weighted_mu0" in names)  # fmt: skip
    return df
