"""Masks in files written by other tools: which tensors are masks and which are weights.

Shared by the three readers (a safetensors, ``.npz`` or PyTorch file without masktopo's metadata);
the rules are in docs/formats.md ("Written by other tools").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MaskFileError, MaskTopoError
from ..masks import MaskSet, to_bool_mask
from .common import make_maskset

__all__ = ["STATE_DICT_KEYS", "WRAPPER_PREFIXES", "find_state_dict", "interpret", "strip_prefix"]

#: Keys under which checkpoints nest their state dict, searched in this order.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
#: Name prefixes added by wrappers (DistributedDataParallel, torch.compile), stripped on reading.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def find_state_dict(obj: Any, depth: int = 0) -> Mapping | None:
    """The first mapping of names to tensors in ``obj``: itself, or under one of
    :data:`STATE_DICT_KEYS` (searched depth-first), or None."""
    if not isinstance(obj, Mapping) or depth > 8:
        return None
    for key in STATE_DICT_KEYS:
        sub = obj.get(key)
        if isinstance(sub, Mapping):
            found = find_state_dict(sub, depth + 1)
            if found is not None:
                return found
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    return None


def strip_prefix(names: list[str]) -> str:
    """The wrapper prefix shared by all ``names`` ("module.", "module._orig_mod.", ... or "")."""
    prefix = ""
    while names:
        rest = [n[len(prefix) :] for n in names]
        nxt = next((p for p in WRAPPER_PREFIXES if all(r.startswith(p) for r in rest)), None)
        if nxt is None or any(len(r) == len(nxt) for r in rest):
            break
        prefix += nxt
    return prefix


def _numpy_view(t: torch.Tensor) -> np.ndarray | None:
    """A numpy view of a CPU tensor, or None (bfloat16, float8, ... have no numpy dtype).

    numpy's elementwise checks are many times faster than torch's on small CPU machines.
    """
    if t.device.type != "cpu" or t.dtype in (torch.bfloat16, torch.complex32) or t.is_complex():
        return None
    try:
        return t.detach().numpy()
    except (TypeError, RuntimeError):
        return None


def _is_binary(t: torch.Tensor) -> bool:
    if t.dtype == torch.bool:
        return True
    if t.is_complex():
        return False
    a = _numpy_view(t)
    if a is not None:
        return bool(((a == 0) | (a == 1)).all())
    return bool(((t == 0) | (t == 1)).all())


def _as_bool_mask(name: str, t: torch.Tensor) -> torch.Tensor:
    """:func:`masktopo.masks.to_bool_mask`, with a numpy fast path for valid masks."""
    if t.dtype != torch.bool:
        a = _numpy_view(t)
        if a is not None:
            ones = a == 1
            if (ones | (a == 0)).all():  # NaN and inf fail this too
                return torch.from_numpy(ones)
    return to_bool_mask(name, t)


def interpret(
    path: Path, state: Mapping, source: str, *, zeros_as_mask: bool, weights: bool
) -> tuple[MaskSet, bool]:
    """Find the masks (and weights) in a foreign name -> tensor mapping; see docs/formats.md."""
    tensors = {
        k: v
        for k, v in state.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor) and v.layout == torch.strided
    }
    if not tensors:
        raise MaskFileError(path, "the file holds no tensors")
    prefix = strip_prefix(list(tensors))
    if prefix:
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    masks: dict[str, torch.Tensor] = {}
    wts: dict[str, torch.Tensor | None] = {}
    if any(k.startswith("mask/") for k in tensors):
        layout = "masktopo"
        for k, v in tensors.items():
            if k.startswith("mask/"):
                masks[k[5:]] = v
                wts[k[5:]] = tensors.get(f"weight/{k[5:]}")
    elif any(k.endswith("_mask") and v.dim() >= 2 for k, v in tensors.items()):
        layout = "prune"
        for k, v in tensors.items():
            if k.endswith("_mask") and v.dim() >= 2:
                base = k[: -len("_mask")]
                masks[base] = v
                w = tensors.get(f"{base}_orig")
                wts[base] = tensors.get(base) if w is None else w
    elif (big := [v for v in tensors.values() if v.dim() >= 2]) and all(map(_is_binary, big)):
        layout = "binary"
        masks = {k: v for k, v in tensors.items() if v.dim() >= 2}
        wts = dict.fromkeys(masks)
    elif zeros_as_mask:
        layout = "zeros_as_mask"
        for k, v in tensors.items():
            if (k == "weight" or k.endswith(".weight")) and v.is_floating_point():
                if v.dim() in (2, 4):
                    masks[k] = v != 0
                    wts[k] = v
        if not masks:
            raise MaskFileError(
                path,
                "zeros_as_mask: the file holds no 2-D or 4-D floating-point '*.weight' tensors",
            )
    else:
        raise MaskFileError(
            path,
            "no masks found (no '*_mask' tensors and no tensors holding only 0 and 1); if zeros "
            "in the weights mark the pruned entries, pass zeros_as_mask=True "
            "(masktopo analyze: --mask nonzero; masktopo info: --zeros-as-mask)",
        )
    try:
        bool_masks = {name: _as_bool_mask(name, m) for name, m in masks.items()}
    except MaskTopoError as e:
        raise MaskFileError(path, str(e)) from None
    has_weights = bool(wts) and all(isinstance(w, torch.Tensor) for w in wts.values())
    meta: dict[str, Any] = {"source": {"path": str(path), "format": source, "layout": layout}}
    if prefix:
        meta["source"]["stripped_prefix"] = prefix
    if has_weights and not weights:  # not attached, but their shapes are checked all the same
        for name, w in wts.items():
            if tuple(w.shape) != tuple(bool_masks[name].shape):
                raise MaskFileError(
                    path,
                    f"layer {name!r}: weight shape {tuple(w.shape)} does not match mask shape "
                    f"{tuple(bool_masks[name].shape)}",
                )
    use = wts if has_weights and weights else None
    return make_maskset(path, bool_masks, None, use, meta), has_weights
