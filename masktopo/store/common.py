"""What the mask-file formats share: names, the layer list, checksums, kept-weight layouts and the
one-line messages (docs/formats.md)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..checks import is_int
from ..errors import MaskFileError, MaskTopoError, MaskValidationError
from ..masks import LAYER_KINDS, LayerInfo, MaskSet, check_name, infer_kind

FORMAT = "masktopo.masks"
#: Version 1: dense weights (or none); version 2: weights stored at the kept positions only.
FORMAT_VERSION = 1
FORMAT_VERSION_KEPT = 2
FORMAT_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_KEPT)

#: File suffix -> reader.
READ_SUFFIXES = {
    ".safetensors": "safetensors",
    ".npz": "npz",
    ".pt": "torch",
    ".pth": "torch",
    ".ckpt": "torch",
    ".bin": "torch",
}
#: Format name accepted by :func:`masktopo.store.save` -> file suffixes that select it.
WRITE_FORMATS = {"safetensors": (".safetensors",), "npz": (".npz",), "pt": (".pt", ".pth")}
#: How weights are laid out in a file written by masktopo (``save(..., weights=...)``).
WEIGHT_LAYOUTS = ("dense", "kept")

NUMPY_FLOATS = {torch.float16, torch.float32, torch.float64}


def describe_layers(layers: list[LayerInfo]) -> str:
    """``name OUTxIN, ...`` on one line, cut at 200 characters."""
    text = ", ".join(f"{x.name} {'x'.join(map(str, x.shape))}" for x in layers)
    return text if len(text) <= 200 else text[:197] + "..."


def check_version(path: Path, version: Any) -> int:
    """The file's format version as an int, when this masktopo reads it."""
    text = str(version)
    if isinstance(version, bool) or not text.isdigit() or int(text) not in FORMAT_VERSIONS:
        raise MaskFileError(
            path,
            f"format_version {version!r} is not supported: masktopo {__version__} reads "
            f"versions {', '.join(map(str, FORMAT_VERSIONS))}",
        )
    return int(text)


def parse_layers(path: Path, value: Any, *, nnz: bool) -> list[dict]:
    """Check a ``layers`` list (of a mask file or run.json): names, kinds, shapes (and nnz)."""
    if not isinstance(value, list) or not value:
        raise MaskFileError(path, "'layers' is not a non-empty list: the file holds no layers")
    seen: set[str] = set()
    for i, d in enumerate(value):
        if not isinstance(d, dict):
            raise MaskFileError(path, f"'layers' entry {i} is not a JSON object")
        name = d.get("name")
        try:
            check_name(name)
        except MaskValidationError as e:
            raise MaskFileError(path, f"'layers' entry {i}: {e}") from None
        if name in seen:
            raise MaskFileError(path, f"layer {name!r} is listed twice")
        seen.add(name)
        shape = d.get("shape")
        if not isinstance(shape, list) or not all(is_int(s) and s > 0 for s in shape):
            raise MaskFileError(path, f"layer {name!r}: shape {shape!r} is not a list of sizes")
        kind = d.get("kind")
        try:
            inferred = infer_kind(tuple(shape))
        except MaskValidationError as e:
            raise MaskFileError(path, f"layer {name!r}: {e}") from None
        if kind not in LAYER_KINDS or kind != inferred:
            raise MaskFileError(path, f"layer {name!r}: kind {kind!r} does not fit shape {shape}")
        if nnz:
            count = d.get("nnz")
            if not is_int(count) or not 0 <= count <= math.prod(shape):
                raise MaskFileError(path, f"layer {name!r}: nnz {count!r} is not a valid count")
        for key in ("crc32", "weight_crc32"):
            if key in d and not (is_int(d[key]) and 0 <= d[key] < 2**32):
                raise MaskFileError(path, f"layer {name!r}: {key} {d[key]!r} is not a CRC-32")
        unknown = sorted(set(d) - _FILE_LAYER_KEYS) if nnz else []
        if unknown:  # e.g. a flipped bit in "crc32", which would turn the check off
            raise MaskFileError(path, f"layer {name!r}: unknown entry {unknown[0]!r} in 'layers' "
                                      "(a damaged header, or a newer format)")  # fmt: skip
    return value


#: The entries of a mask file's ``layers`` items (every format; older files lack some).
_FILE_LAYER_KEYS = frozenset({"name", "kind", "shape", "nnz", "crc32", "weight_crc32", "dtype"})


def make_maskset(
    path: Path,
    masks: dict[str, torch.Tensor],
    kinds: dict[str, str] | None,
    weights: Mapping[str, torch.Tensor] | None,
    meta: dict,
) -> MaskSet:
    """A MaskSet, or a :class:`MaskFileError` naming ``path`` for anything invalid in it."""
    if not masks:
        raise MaskFileError(path, "the file holds no mask layers")
    try:
        return MaskSet(masks, kinds, weights, meta=meta)
    except MaskTopoError as e:
        raise MaskFileError(path, str(e)) from None


def check_tensor_names(path: Path, keys: set[str], layers: list[dict], has_weights: bool) -> None:
    """The file's tensor names are exactly ``mask/<layer>`` (and ``weight/<layer>``)."""
    expected = {f"mask/{d['name']}" for d in layers}
    if has_weights:
        expected |= {f"weight/{d['name']}" for d in layers}
    missing = [k for k in sorted(expected) if k not in keys]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MaskFileError(path, f"tensor {missing[0]!r} is missing{more}")
    extra = sorted(keys - expected)
    if extra:
        why = "the metadata says has_weights=false" if extra[0].startswith("weight/") else ""
        raise MaskFileError(
            path,
            f"tensor {extra[0]!r} is not described by the metadata's layers"
            + (f" ({why})" if why else ""),
        )


# -- bits, bytes and checksums ---------------------------------------------------------------
def pack_mask(mask: torch.Tensor) -> tuple[np.ndarray, int]:
    """The mask's bits, big-endian bit order, row-major; and its nonzero count."""
    flat = mask.detach().cpu().numpy().reshape(-1)
    return np.packbits(flat, bitorder="big"), int(np.count_nonzero(flat))


def unpack_mask(
    path: Path, name: str, packed: torch.Tensor, shape: tuple, nnz: int
) -> torch.Tensor:
    """The bool mask of ``shape`` from its packed bits, checked against its recorded nnz."""
    numel = math.prod(shape)
    nbytes = (numel + 7) // 8
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != nbytes:
        raise MaskFileError(
            path,
            f"layer {name!r}: packed mask is {packed.dtype} of shape {tuple(packed.shape)}, "
            f"expected uint8 of shape ({nbytes},) for a {shape} mask",
        )
    arr = packed.numpy()
    pad = 8 * nbytes - numel
    if pad and int(arr[-1]) & ((1 << pad) - 1):
        raise MaskFileError(path, f"layer {name!r}: padding bits of the packed mask are not zero")
    bits = np.unpackbits(arr, count=numel, bitorder="big")
    count = int(np.count_nonzero(bits))
    if count != nnz:
        raise MaskFileError(
            path,
            f"layer {name!r}: the mask has {count} set bits but the metadata records nnz {nnz} "
            "(the file is corrupt)",
        )
    return torch.from_numpy(bits.view(np.bool_).reshape(shape))


def crc32(t: torch.Tensor) -> int:
    """CRC-32 (zlib) of a CPU tensor's bytes in memory order (any dtype)."""
    t = t.detach().contiguous()
    if t.numel() == 0:
        return 0
    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy()) & 0xFFFFFFFF


def check_crc(path: Path, name: str, what: str, t: torch.Tensor, expected: int | None) -> None:
    """Raise when ``t``'s bytes do not have the recorded CRC-32 (a flipped bit or byte)."""
    if expected is not None and crc32(t) != expected:
        raise MaskFileError(
            path,
            f"layer {name!r}: the {what} bytes do not match their recorded CRC-32 checksum "
            "(the file is corrupt)",
        )


def cpu_weights(maskset: MaskSet) -> dict[str, torch.Tensor]:
    """CPU, contiguous weights; tensors sharing storage (tied weights) are copied apart."""
    out, seen = {}, set()
    for name, w in (maskset.weights or {}).items():
        w = w.detach().cpu().contiguous()
        ptr = w.untyped_storage().data_ptr()
        if ptr in seen:
            w = w.clone()
        seen.add(ptr)
        out[name] = w
    return out


def kept_values(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The weights at the kept positions of ``mask``, in row-major order (1-D)."""
    return weight.reshape(-1)[mask.reshape(-1)].contiguous()


def scatter_kept(path: Path, name: str, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The dense weight (zeros where ``mask`` is False) from its kept values."""
    nnz = int(mask.count_nonzero())
    if values.dim() != 1 or values.numel() != nnz:
        raise MaskFileError(
            path,
            f"layer {name!r}: kept weights have shape {tuple(values.shape)}, expected ({nnz},) "
            "(one value per kept entry)",
        )
    dense = torch.zeros(mask.shape, dtype=values.dtype)
    dense.reshape(-1)[mask.reshape(-1)] = values
    return dense
