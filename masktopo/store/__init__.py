"""Mask files: reading and writing one mask set per file (run directories: :mod:`masktopo.runs`).

The canonical file is a safetensors file holding bit-packed masks, optional weights (dense, or at
the kept positions only), per-layer CRC-32 checksums and JSON metadata
(:mod:`~masktopo.store.safetensors_file`). Readers also accept ``.npz`` archives
(:mod:`~masktopo.store.npz_file`) and PyTorch checkpoints, loaded with ``weights_only=True``: no
code in a checkpoint ever runs (:mod:`~masktopo.store.torch_file`); files written by other tools
are interpreted by :mod:`~masktopo.store.foreign`. Every write is atomic
(:func:`masktopo.files.atomic_write`). docs/formats.md describes each format byte by byte.

Every problem with a file raises :class:`~masktopo.errors.MaskFileError`, whose one-line message
starts with the path and names the layer or line at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MaskFileError, MaskValidationError, UnknownNameError
from ..files import atomic_write, atomic_write_bytes, input_path, os_problem
from ..masks import MaskSet
from . import npz_file, safetensors_file, torch_file
from .common import (
    FORMAT,
    FORMAT_VERSION,
    READ_SUFFIXES,
    WEIGHT_LAYOUTS,
    WRITE_FORMATS,
    describe_layers,
    parse_layers,
)
from .foreign import STATE_DICT_KEYS, WRAPPER_PREFIXES, find_state_dict, strip_prefix
from .torch_file import save_bytes as torch_bytes
from .torch_file import torch_load

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READ_SUFFIXES",
    "STATE_DICT_KEYS",
    "WEIGHT_LAYOUTS",
    "WRAPPER_PREFIXES",
    "WRITE_FORMATS",
    "check_finite",
    "describe",
    "describe_layers",
    "find_state_dict",
    "load",
    "parse_layers",
    "read_file",
    "read_state_dict",
    "read_state_file",
    "save",
    "save_kept",
    "strip_prefix",
    "torch_bytes",
    "torch_load",
]

_READERS = {"safetensors": safetensors_file.read, "npz": npz_file.read, "torch": torch_file.read}


def save(
    path: str | os.PathLike,
    maskset: MaskSet,
    *,
    format: str | None = None,
    weights: str = "dense",
) -> Path:
    """Write ``maskset`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its directory must exist; an existing file is replaced only once the new
        one is completely written (a symlink's target is replaced; a character device or FIFO is
        written directly).
    maskset : MaskSet
        The masks (and weights, when it has them) to write. Must have at least one layer.
    format : {"safetensors", "npz", "pt"}, optional
        File format; by default chosen from the suffix (``.safetensors``, ``.npz``, ``.pt`` or
        ``.pth``). ``"safetensors"`` is the canonical format; ``"npz"`` holds bool arrays and
        ``"pt"`` a ``torch.nn.utils.prune``-style state dict (``<layer>_mask``, ``<layer>_orig``).
    weights : {"dense", "kept"}
        How the weights are stored: the whole tensors (default), or, safetensors only, the
        values at the kept positions of the mask (``nnz`` values per layer instead of
        ``numel``: 1 % of the bytes at 99 % sparsity). Reading gives the same MaskSet either way
        when the weights are zero where the mask is (as masktopo's trainer keeps them); kept
        storage drops the values at pruned positions.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    MaskFileError
        When the destination cannot be written or its suffix selects no format.
    UnknownNameError
        When ``format`` or ``weights`` is not one of the known values.
    MaskValidationError
        When ``maskset`` is not a MaskSet, has no layers or has metadata that is not JSON, or kept
        weights are asked for another format than safetensors.
    """
    if not isinstance(path, str | os.PathLike):
        swapped = " (the arguments are save(path, maskset))" if isinstance(path, MaskSet) else ""
        raise MaskValidationError(
            f"save: path is a {type(path).__name__}, not a str or os.PathLike{swapped}"
        )
    path = Path(os.fspath(path))
    if format is None:
        suffix = path.suffix.lower()
        fmt = next((f for f, sfx in WRITE_FORMATS.items() if suffix in sfx), None)
        if fmt is None:
            known = ", ".join(s for sfx in WRITE_FORMATS.values() for s in sfx)
            raise MaskFileError(
                path, f"cannot choose a file format from the suffix {suffix!r}; use one of {known}"
            )
    elif format in WRITE_FORMATS:
        fmt = format
        reads_as = {"safetensors": "safetensors", "npz": "npz", "pt": "torch"}[fmt]
        if READ_SUFFIXES.get(path.suffix.lower()) != reads_as:
            known = ", ".join(s for s, r in READ_SUFFIXES.items() if r == reads_as)
            raise MaskFileError(
                path,
                f"a {fmt!r} file needs one of the suffixes {known}, or load() cannot read it",
            )
    else:
        raise UnknownNameError("mask file format", format, WRITE_FORMATS)
    if weights not in WEIGHT_LAYOUTS:
        raise UnknownNameError("weight layout", weights, WEIGHT_LAYOUTS)
    if weights == "kept" and fmt != "safetensors":
        raise MaskValidationError(f"weights='kept' is a safetensors layout, not one of {fmt!r}")
    if not isinstance(maskset, MaskSet):
        raise MaskValidationError(f"save() needs a MaskSet, not a {type(maskset).__name__}")
    if len(maskset) == 0:
        raise MaskValidationError(f"{path}: the MaskSet has no layers; nothing to save")
    try:
        meta_json = json.dumps(maskset.meta)
    except (TypeError, ValueError) as e:
        raise MaskValidationError(f"MaskSet.meta is not JSON-serializable ({e})") from None
    if fmt == "safetensors":
        atomic_write_bytes(
            path, safetensors_file.to_bytes(maskset, meta_json, kept=weights == "kept")
        )
    elif fmt == "npz":
        arrays = npz_file.to_arrays(maskset, meta_json)
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    else:
        atomic_write_bytes(path, torch_file.to_bytes(maskset))
    return path


def save_kept(
    path: str | os.PathLike, maskset: MaskSet, values: Mapping[str, torch.Tensor] | None
) -> Path:
    """Write the masks of ``maskset`` (which has no weights) and, when given, the weights at
    their kept positions, ``values[layer]`` (1-D, row-major, one per kept entry, finite), as a
    safetensors file with the kept layout; atomically. What :func:`save` ``(weights="kept")``
    writes for a mask set whose weights are zero where its masks are, without dense weights.

    Raises
    ------
    MaskValidationError
        When ``values`` does not hold one finite value per kept entry of every layer.
    """
    path = Path(os.fspath(path))
    if READ_SUFFIXES.get(path.suffix.lower()) != "safetensors":
        raise MaskFileError(path, "kept weights are written as .safetensors")
    if maskset.has_weights:
        raise MaskValidationError("save_kept() takes the weights as values, not in the MaskSet")
    if values is not None:
        for name in maskset:
            v = values.get(name)
            nnz = maskset.nnz(name)
            if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.numel() != nnz:
                raise MaskValidationError(f"layer {name!r}: kept weights must be {nnz} values")
            if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                raise MaskValidationError(f"layer {name!r}: kept weights must be finite floats")
    meta_json = json.dumps(maskset.meta)
    data = safetensors_file.to_bytes(maskset, meta_json, kept=True, values=values)
    return atomic_write_bytes(path, data)


def read_file(
    path: str | os.PathLike, *, zeros_as_mask: bool = False, weights: bool = True
) -> tuple[MaskSet, str, bool]:
    """One mask file: ``(MaskSet, format name, whether the file has weights)``.

    As :func:`load` for a file; ``format`` is ``"safetensors"``, ``"npz"`` or ``"torch"``.
    """
    p = input_path(path)
    if p.is_dir():
        raise MaskFileError(p, "is a folder, not a mask file")
    fmt = READ_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        known = ", ".join(READ_SUFFIXES)
        raise MaskFileError(
            p,
            f"unsupported file type {p.suffix or '(no suffix)'!r}; supported: {known}, "
            "or a run directory",
        )
    try:  # readable at all? (safetensors reports a permission problem as a missing file)
        os.close(os.open(p, os.O_RDONLY))
    except OSError as e:
        raise MaskFileError(p, f"cannot read ({os_problem(e)})") from None
    ms, has_weights = _READERS[fmt](p, zeros_as_mask=zeros_as_mask, weights=weights)
    return ms, fmt, has_weights


def load(path: str | os.PathLike, *, zeros_as_mask: bool = False, weights: bool = True) -> MaskSet:
    """Read one mask file into a :class:`MaskSet`: :func:`masktopo.load` (which also reads run
    directories) for a file, with the same parameters, result and errors."""
    return read_file(path, zeros_as_mask=zeros_as_mask, weights=weights)[0]


def describe(ms: MaskSet, path: Path, fmt: str, has_weights: bool) -> dict[str, Any]:
    """The ``info`` record of a mask set read from ``path`` (see :func:`masktopo.info`)."""
    layers = []
    for layer in ms.layers():
        nnz = int(np.count_nonzero(ms[layer.name].numpy()))
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "shape": list(layer.shape),
                "nnz": nnz,
                "numel": layer.numel,
                "density": nnz / layer.numel,
            }
        )
    total_nnz = sum(x["nnz"] for x in layers)
    total = sum(x["numel"] for x in layers)
    return {
        "path": str(path),
        "format": fmt,
        "n_layers": len(ms),
        "layers": layers,
        "nnz": total_nnz,
        "numel": total,
        "density": total_nnz / total,
        "has_weights": has_weights,
        "meta": ms.meta,
    }


def read_state_file(path: str | os.PathLike, what: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors state file (a model's whole state, e.g. a PAGS run's
    ``init.safetensors``); ``what`` prefixes the error (``"initial weights"``).

    Raises
    ------
    MaskFileError
        When the file is missing, truncated or not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(os.fspath(path))
    prefix = f"{what}: " if what else ""
    if not p.is_file():
        raise MaskFileError(p, f"{prefix}no such file")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise MaskFileError(p, f"{prefix}not a readable safetensors file "
                               f"({' '.join(str(e).split())[:200]})") from None  # fmt: skip


def check_finite(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Raise :class:`MaskFileError` naming ``path`` and the floating tensors of ``tensors``
    that hold NaN or inf values (a checkpoint of a diverged run): what would be scored,
    pruned or trained on must be finite, and the file is where the values came from."""
    bad = []
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.float() if t.element_size() == 1 else t  # float8: isfinite is unreliable
            if not bool(torch.isfinite(t).all()):
                bad.append(name)
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise MaskFileError(Path(os.fspath(path)),
                            f"holds NaN or inf values in {', '.join(bad[:3])}{more}")  # fmt: skip


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The name → tensor mapping of a PyTorch checkpoint (nested under ``state_dict``,
    ``model``, ... or at the top), wrapper prefixes (``module.``, ``_orig_mod.``) removed; read
    with ``weights_only=True``.

    Raises
    ------
    MaskFileError
        When the file is unreadable or holds no state dict.
    """
    p = input_path(path)
    state = find_state_dict(torch_load(p))
    if state is None:
        raise MaskFileError(p, "no state dict in the checkpoint")
    prefix = strip_prefix(list(state))
    return {k[len(prefix) :]: v for k, v in state.items() if isinstance(v, torch.Tensor)}
