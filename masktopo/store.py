"""Reading and writing mask files and run directories.

The canonical file is a safetensors file holding bit-packed masks, optional weights and JSON
metadata. Readers also accept ``.npz`` archives and PyTorch checkpoints (loaded with
``weights_only=True``: no code in a checkpoint ever runs), and run directories (``run.json``,
``events.jsonl`` and one mask file per event). Every write is atomic. docs/formats.md describes each
format byte by byte and how foreign files are interpreted.

Every problem with a file raises :class:`~masktopo.errors.MaskFileError`, whose one-line message
starts with the path and names the layer or line at fault.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import secrets
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple

import numpy as np
import torch

from ._version import __version__
from .errors import MaskFileError, MaskTopoError, MaskValidationError, UnknownNameError
from .masks import LAYER_KINDS, LayerInfo, MaskSet, check_name, infer_kind, to_bool_mask

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READ_SUFFIXES",
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "WRITE_FORMATS",
    "Run",
    "info",
    "load",
    "read_run",
    "save",
]

FORMAT = "masktopo.masks"
FORMAT_VERSION = 1
RUN_FORMAT = "masktopo.run"
RUN_FORMAT_VERSION = 1
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"

#: File suffix -> reader.
READ_SUFFIXES = {
    ".safetensors": "safetensors",
    ".npz": "npz",
    ".pt": "torch",
    ".pth": "torch",
    ".ckpt": "torch",
    ".bin": "torch",
}
#: Format name accepted by :func:`save` -> file suffixes that select it.
WRITE_FORMATS = {"safetensors": (".safetensors",), "npz": (".npz",), "pt": (".pt", ".pth")}

#: Keys under which checkpoints nest their state dict, searched in this order.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
#: Name prefixes added by wrappers (DistributedDataParallel, torch.compile), stripped on reading.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_NPZ_META_KEY = "__masktopo__"
#: Parts of torch's weights-only unpickler messages that mean "this object is not allowed".
_OBJECT_ERRORS = (
    "GLOBAL",
    "Can only create new object",
    "call reduce",
    "Can only build",
    "imported",
)
_NUMPY_FLOATS = {torch.float16, torch.float32, torch.float64}
#: torch's message for a global from a module it never allows (os, posix, nt, sys); it has no
#: "WeightsUnpickler error:" part, so _OBJECT_ERRORS does not see it.
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked")


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def save(path: str | os.PathLike, maskset: MaskSet, *, format: str | None = None) -> Path:
    """Write ``maskset`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its directory must exist; an existing file is replaced only once the new
        one is completely written.
    maskset : MaskSet
        The masks (and weights, when it has them) to write. Must have at least one layer.
    format : {"safetensors", "npz", "pt"}, optional
        File format; by default chosen from the suffix (``.safetensors``, ``.npz``, ``.pt`` or
        ``.pth``). ``"safetensors"`` is the canonical format; ``"npz"`` holds bool arrays and
        ``"pt"`` a ``torch.nn.utils.prune``-style state dict (``<layer>_mask``, ``<layer>_orig``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    MaskFileError
        When the destination cannot be written or its suffix selects no format.
    UnknownNameError
        When ``format`` is not one of the known formats.
    MaskValidationError
        When ``maskset`` is not a MaskSet, has no layers or has metadata that is not JSON.
    """
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
    if not isinstance(maskset, MaskSet):
        raise MaskValidationError(f"save() needs a MaskSet, not a {type(maskset).__name__}")
    if len(maskset) == 0:
        raise MaskValidationError(f"{path}: the MaskSet has no layers; nothing to save")
    try:
        meta_json = json.dumps(maskset.meta)
    except (TypeError, ValueError) as e:
        raise MaskValidationError(f"MaskSet.meta is not JSON-serializable ({e})") from None
    if fmt == "safetensors":
        data = _safetensors_bytes(maskset, meta_json)
        _atomic_write(path, lambda f: f.write(data))
    elif fmt == "npz":
        arrays = _npz_arrays(maskset, meta_json)
        _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    else:
        state = _prune_state_dict(maskset)
        _atomic_write(path, lambda f: torch.save(state, f))
    return path


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
        For a run directory: the event to load, counting from 0, or from the end when negative.
        The last event when None.
    zeros_as_mask : bool
        For files without masks: each 2-D or 4-D floating-point ``*.weight`` tensor defines a mask
        by its nonzero entries (the weights are kept). Ignored when the file has masks.
    weights : bool
        Attach the file's weights, when it has them. False neither checks them nor, where the
        format allows, reads them.

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
    p = _existing(path)
    _check_event_arg(event)
    if p.is_dir():
        return read_run(p).load(event=event, weights=weights)
    if event is not None:
        raise MaskFileError(
            p,
            "event= (command line: --event) selects an event of a run directory, but this is a file",
        )
    return _read_file(p, zeros_as_mask=zeros_as_mask, weights=weights)[0]


def info(path: str | os.PathLike, *, zeros_as_mask: bool = False) -> dict:
    """Describe a mask file or run directory without attaching weights.

    Masks and the file's structure are fully checked; weight values are not (:func:`load` does).

    Parameters
    ----------
    path : str or os.PathLike
        A mask file, a PyTorch checkpoint or a run directory, as for :func:`load`.
    zeros_as_mask : bool
        As for :func:`load`: for files without masks, each 2-D or 4-D floating-point ``*.weight``
        tensor defines a mask by its nonzero entries. Ignored when the file has masks.

    Returns
    -------
    dict
        ``path``, ``format`` (``"safetensors"``, ``"npz"``, ``"torch"`` or ``"run"``),
        ``n_layers``, ``layers`` (one dict per layer: ``name``, ``kind``, ``shape`` as a list,
        ``nnz``, ``numel``, ``density``), ``nnz``, ``numel``, ``density`` (global),
        ``has_weights``, ``meta``; for a run directory also ``n_events`` and ``event`` (the index
        of the event described: the last).
    """
    p = _existing(path)
    extra: dict[str, Any] = {}
    if p.is_dir():
        run = read_run(p)
        ms, has_weights, index = run._load(None, weights=False)
        fmt = "run"
        extra = {"n_events": len(run.events), "event": index}
    else:
        ms, fmt, has_weights = _read_file(p, zeros_as_mask=zeros_as_mask, weights=False)
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
        "path": str(p),
        "format": fmt,
        "n_layers": len(ms),
        "layers": layers,
        "nnz": total_nnz,
        "numel": total,
        "density": total_nnz / total,
        "has_weights": has_weights,
        "meta": ms.meta,
        **extra,
    }


@dataclass(frozen=True)
class Run:
    """A run directory: ``run.json``, ``events.jsonl`` and the events' mask files.

    Attributes
    ----------
    path : pathlib.Path
        The run directory.
    config : dict
        The whole of ``run.json`` (``format``, ``created``, ``masktopo_version``, the resolved
        training ``config``, ``seed``, ``layers``, ...).
    events : list of dict
        The lines of ``events.jsonl`` in order; ``events[k]["event"] == k``.
    """

    path: Path
    config: dict
    events: list[dict]

    @property
    def layers(self) -> list[LayerInfo]:
        """The masked layers listed in ``run.json``, in order."""
        return [LayerInfo(d["name"], d["kind"], tuple(d["shape"])) for d in self.config["layers"]]

    @property
    def n_events(self) -> int:
        return len(self.events)

    def index(self, event: int | None = None) -> int:
        """The non-negative index of ``event`` (None: the last; negative: from the end)."""
        _check_event_arg(event)
        n = len(self.events)
        if n == 0:
            raise MaskFileError(
                self.path, "the run has no mask events yet (events.jsonl is missing or empty)"
            )
        k = n - 1 if event is None else event
        if not -n <= k < n:
            raise MaskFileError(
                self.path,
                f"event {event} is out of range: the run has {n} event(s), "
                f"valid are 0..{n - 1} (or {-n}..-1 from the end)",
            )
        return k % n

    def event_path(self, event: int | None = None) -> Path:
        """The mask file of ``event``."""
        return self.path / self.events[self.index(event)]["file"]

    def load(self, event: int | None = None, weights: bool = True) -> MaskSet:
        """The MaskSet of ``event`` (None: the last), with weights when dumped and ``weights``."""
        return self._load(event, weights=weights)[0]

    def _load(self, event: int | None, *, weights: bool) -> tuple[MaskSet, bool, int]:
        k = self.index(event)
        ev = self.events[k]
        file = self.path / ev["file"]
        if not file.is_file():
            raise MaskFileError(file, f"the mask file of event {k} is missing")
        ms, _, has_weights = _read_file(file, zeros_as_mask=False, weights=weights)
        if ms.layers() != self.layers:
            raise MaskFileError(
                file,
                f"the layers of event {k} do not match run.json "
                f"({_describe_layers(ms.layers())} vs {_describe_layers(self.layers)})",
            )
        if has_weights != ev["has_weights"]:
            raise MaskFileError(
                file,
                f"events.jsonl says event {k} has_weights={ev['has_weights']}, the file "
                f"{'has' if has_weights else 'has no'} weights",
            )
        nnz = {n: int(np.count_nonzero(m.numpy())) for n, m in ms.items()}
        for name, count in ev["nnz"].items():
            if nnz[name] != count:
                raise MaskFileError(
                    file,
                    f"layer {name!r}: the mask has {nnz[name]} nonzeros, events.jsonl records "
                    f"{count} for event {k}",
                )
        ms.meta = {**ms.meta, "run": str(self.path), "event": dict(ev)}
        return ms, has_weights, k


def read_run(path: str | os.PathLike) -> Run:
    """Read and check a run directory's ``run.json`` and ``events.jsonl``.

    Event mask files are read only by :meth:`Run.load`. A last line of ``events.jsonl`` that has no
    trailing newline and does not parse is a write cut off by a stopped run: it is ignored with a
    warning. Any other bad line is an error.

    Raises
    ------
    MaskFileError
        When ``path`` is not a run directory, ``run.json`` is invalid, or a line of
        ``events.jsonl`` is (message ``"<dir>: events.jsonl line N: ..."``).
    """
    p = _existing(path)
    if not p.is_dir():
        raise MaskFileError(p, "not a run directory")
    run_file = p / RUN_FILE
    if not run_file.is_file():
        raise MaskFileError(p, f"not a run directory (no {RUN_FILE})")
    config = _read_run_json(run_file)
    layers = {d["name"]: math.prod(d["shape"]) for d in config["layers"]}
    events_file = p / EVENTS_FILE
    events: list[dict] = []
    if events_file.exists():
        try:
            data = events_file.read_bytes()
        except OSError as e:
            raise MaskFileError(events_file, f"cannot read ({_oserror(e)})") from None
        lines = data.split(b"\n")
        last = lines.pop()  # b"" when the file ends with a newline
        for i, raw in enumerate(lines, start=1):
            events.append(_parse_event(p, i, raw, len(events), layers))
        if last.strip():
            n = len(lines) + 1
            try:
                obj = json.loads(last.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                warnings.warn(
                    f"{events_file}: ignoring line {n}, a write cut off by a stopped run",
                    stacklevel=2,
                )
            else:
                events.append(_check_event(p, n, obj, len(events), layers))
    return Run(p, config, events)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through ``write(fileobj)`` to a temp file next to ``path``, fsync, rename over it.

    On any failure the temp file is removed and an existing ``path`` is left untouched.
    """
    directory = path.parent
    if not directory.is_dir():
        raise MaskFileError(path, f"cannot write: the directory {directory} does not exist")
    if path.is_dir():
        raise MaskFileError(path, "cannot write: it is a directory")
    tmp: Path | None = None
    try:
        for _ in range(100):
            tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            try:
                fd = os.open(tmp, flags, 0o666)
                break
            except FileExistsError:
                tmp = None
        else:  # pragma: no cover - 100 random 48-bit names all taken
            raise FileExistsError("no free temporary file name")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise MaskFileError(path, f"cannot write ({_oserror(e)})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_directory(directory)


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN allowed) to ``path`` through :func:`_atomic_write`."""
    text = json.dumps(obj, indent=1, allow_nan=True) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pack(mask: torch.Tensor) -> tuple[np.ndarray, int]:
    flat = mask.detach().cpu().numpy().reshape(-1)
    return np.packbits(flat, bitorder="big"), int(np.count_nonzero(flat))


def _cpu_weights(maskset: MaskSet) -> dict[str, torch.Tensor]:
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


def _safetensors_bytes(maskset: MaskSet, meta_json: str) -> bytes:
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for layer in maskset.layers():
        packed, nnz = _pack(maskset[layer.name])
        tensors[f"mask/{layer.name}"] = torch.from_numpy(packed)
        layers.append(
            {"name": layer.name, "kind": layer.kind, "shape": list(layer.shape), "nnz": nnz}
        )
    for name, w in _cpu_weights(maskset).items():
        tensors[f"weight/{name}"] = w
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "layers": json.dumps(layers),
        "has_weights": "true" if maskset.has_weights else "false",
        "meta": meta_json,
        "masktopo_version": __version__,
    }
    return st_save(tensors, metadata=metadata)


def _npz_arrays(maskset: MaskSet, meta_json: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    layers = []
    weights = _cpu_weights(maskset)
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
            if w.dtype not in _NUMPY_FLOATS:  # bfloat16, float8: exactly representable in f32
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
    arrays[_NPZ_META_KEY] = np.array(json.dumps(header))
    return arrays


def _prune_state_dict(maskset: MaskSet) -> dict[str, torch.Tensor]:
    weights = _cpu_weights(maskset)
    state: dict[str, torch.Tensor] = {}
    for name in maskset:
        w = weights.get(name)
        dtype = torch.float32 if w is None else w.dtype
        state[f"{name}_mask"] = maskset[name].detach().cpu().to(dtype)
        if w is not None:
            state[f"{name}_orig"] = w
    return state


# ---------------------------------------------------------------------------------------------
# reading files
# ---------------------------------------------------------------------------------------------
def _read_file(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, str, bool]:
    """(MaskSet, format name, whether the file has weights) of one mask file."""
    fmt = READ_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(READ_SUFFIXES)
        raise MaskFileError(
            path,
            f"unsupported file type {path.suffix or '(no suffix)'!r}; supported: {known}, "
            "or a run directory",
        )
    reader = {"safetensors": _read_safetensors, "npz": _read_npz, "torch": _read_torch}[fmt]
    ms, has_weights = reader(path, zeros_as_mask=zeros_as_mask, weights=weights)
    return ms, fmt, has_weights


def _read_safetensors(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                return _interpret(
                    path, tensors, "safetensors", zeros_as_mask=zeros_as_mask, weights=weights
                )
            return _read_masktopo_safetensors(path, f, metadata, weights=weights)
    except SafetensorError as e:
        raise MaskFileError(path, f"truncated or corrupt safetensors file ({_short(e)})") from None
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({_oserror(e)})") from None


def _read_masktopo_safetensors(
    path: Path, f: Any, metadata: dict[str, str], *, weights: bool
) -> tuple[MaskSet, bool]:
    _check_version(path, metadata.get("format_version"))
    layers = _parse_layers(path, _json_field(path, metadata, "layers"), nnz=True)
    has_weights = {"true": True, "false": False}.get(metadata.get("has_weights", ""))
    if has_weights is None:
        raise MaskFileError(
            path, f"metadata 'has_weights' is {metadata.get('has_weights')!r}, not 'true'/'false'"
        )
    meta = _json_field(path, metadata, "meta") if "meta" in metadata else {}
    if not isinstance(meta, dict):
        raise MaskFileError(path, "metadata 'meta' is not a JSON object")
    _check_tensor_names(path, set(f.keys()), layers, has_weights)
    masks: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    wts: dict[str, torch.Tensor] = {}
    for layer in layers:
        name, shape = layer["name"], tuple(layer["shape"])
        packed = f.get_tensor(f"mask/{name}")
        masks[name] = _unpack(path, name, packed, shape, layer["nnz"])
        kinds[name] = layer["kind"]
        if has_weights:
            key = f"weight/{name}"
            wshape = tuple(f.get_slice(key).get_shape())
            if wshape != shape:
                raise MaskFileError(
                    path, f"layer {name!r}: weight shape {wshape} does not match mask shape {shape}"
                )
            if weights:
                wts[name] = f.get_tensor(key)
    ms = _make_maskset(path, masks, kinds, wts if has_weights and weights else None, meta)
    return ms, has_weights


def _unpack(path: Path, name: str, packed: torch.Tensor, shape: tuple, nnz: int) -> torch.Tensor:
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


def _check_tensor_names(path: Path, keys: set[str], layers: list[dict], has_weights: bool) -> None:
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


def _read_npz(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    arrays: dict[str, Any] = {}
    try:
        with open(path, "rb") as fh:
            if not zipfile.is_zipfile(fh):
                raise MaskFileError(path, "truncated or corrupt .npz file (not a zip archive)")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as z:
                _check_zip_directory(path, fh, z.zip)
                skip_weights = not weights and _NPZ_META_KEY in z.files
                for key in z.files:
                    try:
                        if skip_weights and key.startswith("weight/"):
                            arrays[key] = _npy_header(z, key)
                        else:
                            arrays[key] = z[key]
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
        raise MaskFileError(path, f"cannot read ({_oserror(e)})") from None
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        ValueError,
        KeyError,
        NotImplementedError,
        RuntimeError,  # zipfile: a member flagged as encrypted (e.g. a flipped flag bit)
    ) as e:
        raise MaskFileError(path, f"truncated or corrupt .npz file ({_short(e)})") from None
    if _NPZ_META_KEY in arrays:
        return _read_masktopo_npz(path, arrays, weights=weights)
    tensors = {}
    for key, a in arrays.items():
        if a.dtype.kind in "biuf":
            with contextlib.suppress(TypeError):  # e.g. float128 has no torch dtype
                tensors[key] = torch.from_numpy(a)
    return _interpret(path, tensors, "npz", zeros_as_mask=zeros_as_mask, weights=weights)


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


def _npy_header(z: Any, key: str) -> np.ndarray | _NpyHeader:
    readers = {(1, 0): np.lib.format.read_array_header_1_0}
    readers[(2, 0)] = np.lib.format.read_array_header_2_0
    member = f"{key}.npy"
    if member in z.zip.namelist():
        with z.zip.open(member) as f:
            read = readers.get(np.lib.format.read_magic(f))
            if read is not None:
                shape, _, dtype = read(f)
                return _NpyHeader(tuple(shape), dtype)
    return z[key]


def _read_masktopo_npz(
    path: Path, arrays: dict[str, Any], *, weights: bool
) -> tuple[MaskSet, bool]:
    raw = arrays.pop(_NPZ_META_KEY)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise MaskFileError(path, f"{_NPZ_META_KEY!r} is not a JSON string")
    try:
        header = json.loads(raw.item())
    except json.JSONDecodeError as e:
        raise MaskFileError(path, f"{_NPZ_META_KEY!r} is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MaskFileError(path, f"{_NPZ_META_KEY!r} does not describe a {FORMAT!r} file")
    _check_version(path, header.get("format_version"))
    layers = _parse_layers(path, header.get("layers"), nnz=True)
    has_weights = header.get("has_weights")
    if not isinstance(has_weights, bool):
        raise MaskFileError(path, f"'has_weights' is {has_weights!r}, not true/false")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise MaskFileError(path, "'meta' is not a JSON object")
    _check_tensor_names(path, set(arrays), layers, has_weights)
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
    ms = _make_maskset(path, masks, kinds, wts if has_weights and weights else None, meta)
    return ms, has_weights


def _torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only,
    never code; every failure is a one-line :class:`MaskFileError`."""
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an unusual pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({_oserror(e)})") from None
    except pickle.UnpicklingError as e:
        raise MaskFileError(path, _unpickling_problem(path, e)) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... on bad bytes
        raise MaskFileError(path, f"truncated or corrupt checkpoint ({_short(e)})") from None


def _read_torch(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    obj = _torch_load(path)
    state = _find_state_dict(obj)
    if state is None:
        raise MaskFileError(
            path,
            "no state dict found: the checkpoint holds no mapping of names to tensors "
            f"(looked at the top level and under {', '.join(map(repr, STATE_DICT_KEYS))})",
        )
    return _interpret(path, state, "torch", zeros_as_mask=zeros_as_mask, weights=weights)


def _unpickling_problem(path: Path, e: Exception) -> str:
    text = str(e)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:  # e.g. os.system: the classic code-running payload
        return (
            "refusing to unpickle: the checkpoint contains Python objects other than tensors "
            f"({blocked.group(1)}, from the blocked module {blocked.group(2)!r}); save only the "
            "state dict (torch.save(model.state_dict(), path))"
        )
    marker = "WeightsUnpickler error:"
    detail = text[text.index(marker) + len(marker) :].strip() if marker in text else ""
    detail = detail.splitlines()[0] if detail else ""
    if not any(s in detail for s in _OBJECT_ERRORS):  # e.g. "Unsupported operand": bad bytes
        return f"truncated or corrupt checkpoint ({_short(e)})"
    if detail.startswith("Unsupported global: GLOBAL "):
        detail = detail.removeprefix("Unsupported global: GLOBAL ").split(" ")[0]
        # A legacy (non-zip) checkpoint cut short stops mid-name in one of torch's own globals.
        if detail.startswith("torch.") and not zipfile.is_zipfile(path):
            return f"truncated or corrupt checkpoint (unpickling stopped at {detail})"
    return (
        "refusing to unpickle: the checkpoint contains Python objects other than tensors "
        f"({detail[:160]}); save only the state dict (torch.save(model.state_dict(), path))"
    )


def _find_state_dict(obj: Any, depth: int = 0) -> Mapping | None:
    if not isinstance(obj, Mapping) or depth > 8:
        return None
    for key in STATE_DICT_KEYS:
        sub = obj.get(key)
        if isinstance(sub, Mapping):
            found = _find_state_dict(sub, depth + 1)
            if found is not None:
                return found
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    return None


def _strip_wrapper_prefixes(names: list[str]) -> str:
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


def _interpret(
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
    prefix = _strip_wrapper_prefixes(list(tensors))
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
            "(command line: --zeros-as-mask)",
        )
    try:
        bool_masks = {name: _as_bool_mask(name, m) for name, m in masks.items()}
    except MaskTopoError as e:
        raise MaskFileError(path, str(e)) from None
    has_weights = bool(wts) and all(isinstance(w, torch.Tensor) for w in wts.values())
    meta: dict[str, Any] = {"source": {"path": str(path), "format": source, "layout": layout}}
    if prefix:
        meta["source"]["stripped_prefix"] = prefix
    use = wts if has_weights and weights else None
    return _make_maskset(path, bool_masks, None, use, meta), has_weights


# ---------------------------------------------------------------------------------------------
# reading run directories
# ---------------------------------------------------------------------------------------------
def _read_run_json(run_file: Path) -> dict:
    try:
        config = json.loads(run_file.read_text(encoding="utf-8"))
    except OSError as e:
        raise MaskFileError(run_file, f"cannot read ({_oserror(e)})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskFileError(run_file, f"not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise MaskFileError(run_file, "not a JSON object")
    if config.get("format") != RUN_FORMAT:
        raise MaskFileError(
            run_file, f"'format' is {config.get('format')!r}, expected {RUN_FORMAT!r}"
        )
    version = config.get("format_version")
    if version != RUN_FORMAT_VERSION or isinstance(version, bool):
        raise MaskFileError(
            run_file,
            f"format_version {version!r} is not supported: masktopo {__version__} reads "
            f"version {RUN_FORMAT_VERSION}",
        )
    if not isinstance(config.get("config", {}), dict):
        raise MaskFileError(run_file, "'config' is not a JSON object")
    _parse_layers(run_file, config.get("layers"), nnz=False)
    return config


def _parse_event(run: Path, line: int, raw: bytes, expected: int, layers: dict) -> dict:
    if not raw.strip():
        raise MaskFileError(run, f"{EVENTS_FILE} line {line}: empty line")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskFileError(run, f"{EVENTS_FILE} line {line}: not valid JSON ({e})") from None
    return _check_event(run, line, obj, expected, layers)


def _check_event(run: Path, line: int, obj: Any, expected: int, layers: dict) -> dict:
    def bad(problem: str) -> MaskFileError:
        return MaskFileError(run, f"{EVENTS_FILE} line {line}: {problem}")

    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    for key in ("event", "step", "epoch", "kind", "file", "has_weights", "nnz", "density"):
        if key not in obj:
            raise bad(f"missing key {key!r}")
    if obj["event"] != expected or not _is_int(obj["event"]):
        raise bad(f"'event' is {obj['event']!r}, expected {expected} (events count from 0)")
    for key in ("step", "epoch"):
        v = obj[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise bad(f"{key!r} is {v!r}, not a number or null")
    if not isinstance(obj["kind"], str) or not obj["kind"]:
        raise bad(f"'kind' is {obj['kind']!r}, not a non-empty string")
    file = obj["file"]
    if not isinstance(file, str) or not file:
        raise bad(f"'file' is {file!r}, not a path")
    rel = PurePosixPath(file)
    if rel.is_absolute() or ".." in rel.parts or "\\" in file or ":" in file:
        raise bad(f"'file' {file!r} is not a relative path inside the run directory")
    if not isinstance(obj["has_weights"], bool):
        raise bad(f"'has_weights' is {obj['has_weights']!r}, not true/false")
    nnz = obj["nnz"]
    if not isinstance(nnz, dict) or set(nnz) != set(layers):
        got = sorted(nnz) if isinstance(nnz, dict) else nnz
        raise bad(f"'nnz' must map each layer of {RUN_FILE} to a count, got {got!r}")
    for name, count in nnz.items():
        if not _is_int(count) or not 0 <= count <= layers[name]:
            raise bad(f"'nnz' of layer {name!r} is {count!r}, not a count in 0..{layers[name]}")
    d = obj["density"]
    if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d <= 1:
        raise bad(f"'density' is {d!r}, not a number in [0, 1]")
    return obj


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _existing(path: str | os.PathLike) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise MaskValidationError(f"a path is a str or os.PathLike, not a {type(path).__name__}")
    p = Path(os.fspath(path))
    if not p.exists():
        raise MaskFileError(p, "no such file or directory")
    return p


def _check_event_arg(event: Any) -> None:
    if event is not None and not _is_int(event):
        raise MaskValidationError(f"event must be an integer or None, not {event!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_version(path: Path, version: Any) -> None:
    if str(version) != str(FORMAT_VERSION) or isinstance(version, bool):
        raise MaskFileError(
            path,
            f"format_version {version!r} is not supported: masktopo {__version__} reads "
            f"version {FORMAT_VERSION}",
        )


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise MaskFileError(path, f"metadata has no {key!r} entry")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as e:
        raise MaskFileError(path, f"metadata {key!r} is not valid JSON ({e})") from None


def _parse_layers(path: Path, value: Any, *, nnz: bool) -> list[dict]:
    """Check a ``layers`` list: names, kinds, shapes (and nnz counts)."""
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
        if not isinstance(shape, list) or not all(_is_int(s) and s > 0 for s in shape):
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
            if not _is_int(count) or not 0 <= count <= math.prod(shape):
                raise MaskFileError(path, f"layer {name!r}: nnz {count!r} is not a valid count")
    return value


def _make_maskset(
    path: Path,
    masks: dict[str, torch.Tensor],
    kinds: dict[str, str] | None,
    weights: Mapping[str, torch.Tensor] | None,
    meta: dict,
) -> MaskSet:
    if not masks:
        raise MaskFileError(path, "the file holds no mask layers")
    try:
        return MaskSet(masks, kinds, weights, meta=meta)
    except MaskTopoError as e:
        raise MaskFileError(path, str(e)) from None


def _describe_layers(layers: list[LayerInfo]) -> str:
    text = ", ".join(f"{x.name} {'x'.join(map(str, x.shape))}" for x in layers)
    return text if len(text) <= 200 else text[:197] + "..."


def _short(e: BaseException) -> str:
    """``Type: first sentence`` of an exception, on one line."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip() if lines else ""
    text = text.split(". ")[0].rstrip(".")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _oserror(e: OSError) -> str:
    return e.strerror or _short(e)
