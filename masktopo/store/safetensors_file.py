"""The canonical mask file: safetensors with bit-packed masks, optional weights (dense or at the
kept positions only), per-layer CRC-32 checksums and JSON metadata (docs/formats.md).

Reading checks the structure first (padding bits, set-bit counts, shapes, finite weights: each
names what is wrong), then every layer's recorded CRC-32 of its mask and weight bytes, so that
damage no structural check sees (a flipped bit in a weight's mantissa) is an error too, not
silent garbage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import MaskFileError, one_line
from ..masks import MaskSet
from .common import (
    FORMAT,
    FORMAT_VERSION,
    FORMAT_VERSION_KEPT,
    check_crc,
    check_tensor_names,
    check_version,
    cpu_weights,
    crc32,
    kept_values,
    make_maskset,
    pack_mask,
    parse_layers,
    scatter_kept,
    unpack_mask,
)
from .foreign import interpret


def to_bytes(
    maskset: MaskSet,
    meta_json: str,
    *,
    kept: bool,
    values: dict[str, torch.Tensor] | None = None,
) -> bytes:
    """The file's bytes: ``mask/<layer>`` (packed bits), ``weight/<layer>`` (dense, or 1-D at
    the kept positions when ``kept``) and the metadata with each layer's checksums.

    ``values`` gives the kept weights directly (1-D, row-major, CPU) for a ``maskset`` without
    weights: what the run writer records, without building dense weights to gather them again.
    """
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    layers = []
    weights = cpu_weights(maskset)
    has_weights = bool(weights) or values is not None
    for layer in maskset.layers():
        mask = maskset[layer.name]
        packed, nnz = pack_mask(mask)
        mask_t = torch.from_numpy(packed)
        tensors[f"mask/{layer.name}"] = mask_t
        entry = {"name": layer.name, "kind": layer.kind, "shape": list(layer.shape), "nnz": nnz,
                 "crc32": crc32(mask_t)}  # fmt: skip
        if has_weights:
            if values is not None:
                w = values[layer.name].detach().cpu().contiguous()
            elif kept:
                w = kept_values(weights[layer.name], mask.cpu())
            else:
                w = weights[layer.name]
            tensors[f"weight/{layer.name}"] = w
            entry["weight_crc32"] = crc32(w)
        layers.append(entry)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION_KEPT if kept and has_weights else FORMAT_VERSION),
        "layers": json.dumps(layers),
        "has_weights": "true" if has_weights else "false",
        "meta": meta_json,
        "masktopo_version": __version__,
    }
    if kept and has_weights:
        metadata["weight_layout"] = "kept"
    return st_save(tensors, metadata=metadata)


def is_masktopo_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file in masktopo's own format (its metadata says so);
    False for any other file, also an unreadable one (its reader then says what is wrong)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError):
        return False


def read(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                return interpret(
                    path, tensors, "safetensors", zeros_as_mask=zeros_as_mask, weights=weights
                )
            return _read_masktopo(path, f, metadata, weights=weights)
    except SafetensorError as e:
        raise MaskFileError(
            path, f"truncated or corrupt safetensors file ({one_line(e)})"
        ) from None
    except OSError as e:
        from ..files import os_problem

        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise MaskFileError(path, f"metadata has no {key!r} entry")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as e:
        raise MaskFileError(path, f"metadata {key!r} is not valid JSON ({e})") from None


def _read_masktopo(path: Path, f: Any, metadata: dict[str, str], *, weights: bool
                   ) -> tuple[MaskSet, bool]:  # fmt: skip
    version = check_version(path, metadata.get("format_version"))
    layers = parse_layers(path, _json_field(path, metadata, "layers"), nnz=True)
    has_weights = {"true": True, "false": False}.get(metadata.get("has_weights", ""))
    if has_weights is None:
        raise MaskFileError(
            path, f"metadata 'has_weights' is {metadata.get('has_weights')!r}, not 'true'/'false'"
        )
    layout = metadata.get("weight_layout", "dense")
    if layout not in ("dense", "kept") or (layout == "kept" and version < FORMAT_VERSION_KEPT):
        raise MaskFileError(
            path, f"metadata 'weight_layout' {layout!r} is not valid for format_version {version}"
        )
    meta = _json_field(path, metadata, "meta") if "meta" in metadata else {}
    if not isinstance(meta, dict):
        raise MaskFileError(path, "metadata 'meta' is not a JSON object")
    check_tensor_names(path, set(f.keys()), layers, has_weights)
    masks: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    wts: dict[str, torch.Tensor] = {}
    sums: list[tuple[str, str, torch.Tensor, int | None]] = []  # checked last (module docstring)
    for layer in layers:
        name, shape = layer["name"], tuple(layer["shape"])
        packed = f.get_tensor(f"mask/{name}")
        masks[name] = unpack_mask(path, name, packed, shape, layer["nnz"])
        sums.append((name, "mask", packed, layer.get("crc32")))
        kinds[name] = layer["kind"]
        if has_weights:
            key = f"weight/{name}"
            wshape = tuple(f.get_slice(key).get_shape())
            want = (layer["nnz"],) if layout == "kept" else shape
            if wshape != want:
                what = "kept weights" if layout == "kept" else "weight"
                raise MaskFileError(
                    path,
                    f"layer {name!r}: {what} shape {wshape} does not match "
                    + (f"the mask's {layer['nnz']} kept entries" if layout == "kept"
                       else f"mask shape {shape}"),
                )  # fmt: skip
            if weights:
                w = f.get_tensor(key)
                sums.append((name, "weight", w, layer.get("weight_crc32")))
                if layout == "kept":
                    w = scatter_kept(path, name, w, masks[name])
                wts[name] = w
    ms = make_maskset(path, masks, kinds, wts if has_weights and weights else None, meta)
    for name, what, t, expected in sums:
        check_crc(path, name, what, t, expected)
    return ms, has_weights
