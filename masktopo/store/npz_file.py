"""``.npz`` mask files: bool arrays and a JSON header written by masktopo, or any archive of
0/1 (or weight) arrays written by other tools; read with ``allow_pickle=False`` and every
array's size checked against the archive before anything is allocated (docs/formats.md)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import torch

from .._version import __version__
from ..errors import MaskFileError, one_line
from ..files import os_problem
from ..masks import MaskSet
from .common import (
    FORMAT,
    FORMAT_VERSION,
    NUMPY_FLOATS,
    check_tensor_names,
    check_version,
    cpu_weights,
    make_maskset,
    parse_layers,
)
from .foreign import interpret

NPZ_META_KEY = "__masktopo__"
#: The largest ratio of uncompressed to compressed size that deflate can reach (about 1032:1).
_MAX_DEFLATE_RATIO = 1100


def to_arrays(maskset: MaskSet, meta_json: str) -> dict[str, np.ndarray]:
    """The archive's arrays: ``mask/<layer>`` (bool), ``weight/<layer>`` and the header."""
    arrays: dict[str, np.ndarray] = {}
    layers = []
    weights = cpu_weights(maskset)
    for layer in maskset.layers():
        mask = maskset[layer.name].detach().cpu().numpy()
        arrays[f"mask/{layer.name}"] = mask
        entry = {
            "name": layer.name,
            "kind": layer.kind,
            "shape": list(layer.shape),
            "nnz": int(np.count_nonzero(mask)),
        }
        if weights:
            w = weights[layer.name]
            entry["dtype"] = str(w.dtype).removeprefix("torch.")
            if w.dtype not in NUMPY_FLOATS:  # bfloat16, float8: exactly representable in f32
                w = w.float()
            arrays[f"weight/{layer.name}"] = w.numpy()
        layers.append(entry)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layers": layers,
        "has_weights": maskset.has_weights,
        "meta": json.loads(meta_json),
        "masktopo_version": __version__,
    }
    arrays[NPZ_META_KEY] = np.array(json.dumps(header))
    return arrays


def read(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    arrays: dict[str, Any] = {}
    try:
        with open(path, "rb") as fh:
            if not zipfile.is_zipfile(fh):
                raise MaskFileError(path, "truncated or corrupt .npz file (not a zip archive)")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as z:
                _check_zip_directory(path, fh, z.zip)
                size = os.fstat(fh.fileno()).st_size
                headers = {key: _checked_header(path, z, key, size) for key in z.files}
                skip_weights = not weights and NPZ_META_KEY in z.files
                for key in z.files:
                    try:
                        if skip_weights and key.startswith("weight/") and headers[key]:
                            arrays[key] = headers[key]
                        else:
                            arrays[key] = z[key]
                            if not isinstance(arrays[key], np.ndarray):  # np.load: raw bytes
                                raise MaskFileError(
                                    path,
                                    f"not an .npz file of arrays: member {key!r} is not a .npy "
                                    "array",
                                )
                    except ValueError as e:
                        if "allow_pickle" in str(e):
                            raise MaskFileError(
                                path,
                                f"refusing to unpickle: array {key!r} holds Python objects "
                                "(np.load is used with allow_pickle=False)",
                            ) from None
                        raise
    except MaskFileError:
        raise
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
        # a seek before the start of the file: offsets read from the file point outside it
        raise MaskFileError(path, "truncated or corrupt .npz file (an offset in it points "
                                  "outside the file)") from None  # fmt: skip
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        ValueError,
        KeyError,
        NotImplementedError,
        RuntimeError,  # zipfile: a member flagged as encrypted (e.g. a flipped flag bit)
    ) as e:
        raise MaskFileError(path, f"truncated or corrupt .npz file ({one_line(e)})") from None
    if NPZ_META_KEY in arrays:
        return _read_masktopo_npz(path, arrays, weights=weights)
    tensors = {}
    for key, a in arrays.items():
        if a.dtype.kind in "biuf":
            with contextlib.suppress(TypeError):  # e.g. float128 has no torch dtype
                tensors[key] = torch.from_numpy(a)
    return interpret(path, tensors, "npz", zeros_as_mask=zeros_as_mask, weights=weights)


def _check_zip_directory(path: Path, fh: IO[bytes], archive: zipfile.ZipFile) -> None:
    """Fail when the zip's central directory lists fewer members than its end record counts.

    zipfile stops reading a damaged central directory early without an error, which would hide
    members (the ``__masktopo__`` header among them) instead of reporting the damage.
    """
    try:
        total = zipfile._EndRecData(fh)[zipfile._ECD_ENTRIES_TOTAL]  # private, stable since 2.x
    except (AttributeError, IndexError, TypeError):  # pragma: no cover - zipfile changed
        return
    found = len(archive.infolist())
    if total != found:
        raise MaskFileError(
            path,
            f"truncated or corrupt .npz file (the zip directory lists {found} of its {total} "
            "members)",
        )


class _NpyHeader(NamedTuple):
    """Shape and dtype of an array in an .npz archive, read without its data."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _checked_header(path: Path, z: Any, key: str, size: int) -> _NpyHeader | None:
    """Shape and dtype of array ``key``, read from its ``.npy`` header without its data, after
    checking that the sizes the archive claims are possible: a member's uncompressed size must
    be its header plus the array's bytes, and fit what its compressed bytes in a file of
    ``size`` bytes can hold, so a tiny file claiming a huge array is refused before anything is
    allocated. None for a member that is not a ``.npy`` array of a known header version."""
    member = f"{key}.npy"
    try:
        info = z.zip.getinfo(member)
    except KeyError:
        return None
    if info.compress_size > size or (
        info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size
    ):
        raise MaskFileError(
            path,
            f"truncated or corrupt .npz file (array {key!r} claims {info.compress_size} bytes in "
            f"a file of {size})",
        )
    if info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 4096:
        raise MaskFileError(
            path,
            f"truncated or corrupt .npz file (array {key!r} claims {info.file_size} bytes from "
            f"{info.compress_size} compressed bytes, more than compression can give)",
        )
    readers = {(1, 0): np.lib.format.read_array_header_1_0}
    readers[(2, 0)] = np.lib.format.read_array_header_2_0
    with z.zip.open(member) as f:
        read = readers.get(np.lib.format.read_magic(f))
        if read is None:
            return None
        shape, _, dtype = read(f, max_header_size=100_000)
        header_len = f.tell()
    if dtype.hasobject:
        return None  # refused as pickled objects when read
    nbytes = math.prod(shape) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise MaskFileError(
            path,
            f"truncated or corrupt .npz file (array {key!r} of shape {tuple(shape)} and dtype "
            f"{dtype} needs {nbytes} bytes, its member holds {info.file_size - header_len})",
        )
    return _NpyHeader(tuple(shape), dtype)


def _read_masktopo_npz(
    path: Path, arrays: dict[str, Any], *, weights: bool
) -> tuple[MaskSet, bool]:
    raw = arrays.pop(NPZ_META_KEY)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise MaskFileError(path, f"{NPZ_META_KEY!r} is not a JSON string")
    try:
        header = json.loads(raw.item())
    except json.JSONDecodeError as e:
        raise MaskFileError(path, f"{NPZ_META_KEY!r} is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MaskFileError(path, f"{NPZ_META_KEY!r} does not describe a {FORMAT!r} file")
    check_version(path, header.get("format_version"))
    layers = parse_layers(path, header.get("layers"), nnz=True)
    has_weights = header.get("has_weights")
    if not isinstance(has_weights, bool):
        raise MaskFileError(path, f"'has_weights' is {has_weights!r}, not true/false")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise MaskFileError(path, "'meta' is not a JSON object")
    check_tensor_names(path, set(arrays), layers, has_weights)
    masks, kinds, wts = {}, {}, {}
    for layer in layers:
        name, shape = layer["name"], tuple(layer["shape"])
        m = arrays[f"mask/{name}"]
        if m.dtype != np.bool_ or m.shape != shape:
            raise MaskFileError(
                path, f"layer {name!r}: mask is {m.dtype} of shape {m.shape}, expected bool {shape}"
            )
        count = int(np.count_nonzero(m))
        if count != layer["nnz"]:
            raise MaskFileError(
                path,
                f"layer {name!r}: the mask has {count} nonzeros but the metadata records nnz "
                f"{layer['nnz']} (the file is corrupt)",
            )
        masks[name], kinds[name] = torch.from_numpy(m), layer["kind"]
        if has_weights:
            w = arrays[f"weight/{name}"]
            if w.shape != shape:
                raise MaskFileError(
                    path,
                    f"layer {name!r}: weight shape {w.shape} does not match mask shape {shape}",
                )
            if weights:
                if w.dtype.kind != "f":
                    raise MaskFileError(
                        path, f"layer {name!r}: weight dtype {w.dtype} is not float"
                    )
                t = torch.from_numpy(w)
                dtype = getattr(torch, str(layer.get("dtype", "")), None)
                if isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype != t.dtype:
                    t = t.to(dtype)
                wts[name] = t
    ms = make_maskset(path, masks, kinds, wts if has_weights and weights else None, meta)
    return ms, has_weights
