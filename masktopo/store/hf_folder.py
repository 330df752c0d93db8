"""Hugging Face model folders, read lazily tensor by tensor (docs/llm.md, docs/formats.md).

A folder holds ``config.json`` and its weights as one ``model.safetensors`` or as shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor: shard file}}``); without safetensors,
as PyTorch pickles: one ``pytorch_model.bin`` or shards listed by ``pytorch_model.bin.index.json``
(safetensors are preferred when a folder has both, as transformers does). Pruned LLMs (SparseGPT,
Wanda, 2:4 semi-structured) are published this way with their pruned weights stored as zeros, so a
layer's mask is its nonzero weights.

Only the safetensors *headers* are read up front (8 bytes of length, then JSON: dtype, shape and
byte range of every tensor), and every range is checked against its file's size. A tensor's bytes
are read with one positioned read when it is asked for, into memory that is freed when the caller
drops the tensor: nothing is memory-mapped, so the resident memory of a pass over a model is that
of the few tensors in use, not that of the model (file-backed pages of a map count as resident).

A ``.bin`` file is opened with ``torch.load(weights_only=True, mmap=True)``
(:func:`~masktopo.store.torch_file.torch_load`: torch's restricted unpickler, which builds tensors
and plain containers and never runs code from the file), which reads the pickle but no tensor
data. A tensor is read by mapping its file again, copying the tensor out and dropping the map, so
the touched pages of the map leave the resident memory with it; its bytes are checked against the
CRC-32 checksums of the file's zip records. Legacy (non-zip) ``torch.save`` files cannot be mapped
and are refused.

Every problem raises :class:`~masktopo.errors.MaskFileError` naming the file: a folder without
weights, a shard named in the index but missing, an index entry that points outside the folder, a
truncated shard, a tensor the index names but its shard does not hold; for ``.bin`` files also a
corrupt or legacy file, a pickle that refers to anything but tensors and plain containers, and a
file that holds something other than a dict of tensors.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MaskFileError, UnknownNameError
from ..files import os_problem
from .torch_file import check_storage, record_checksums, torch_load

__all__ = [
    "BIN_FILE",
    "BIN_INDEX_FILE",
    "CONV1D_MODELS",
    "CONV1D_MODULES",
    "INCLUDE",
    "INDEX_FILE",
    "SINGLE_FILE",
    "TENSOR_CLASSES",
    "HFSource",
    "TensorEntry",
    "classify",
    "is_hf_folder",
    "llama_shapes",
    "natural_key",
    "open_source",
    "write_folder",
]

#: The index of a sharded checkpoint and the single-file checkpoint (transformers' names).
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
#: The same for PyTorch pickles (shards ``pytorch_model-00001-of-00002.bin``, ...): read when a
#: folder has no safetensors.
BIN_INDEX_FILE = "pytorch_model.bin.index.json"
BIN_FILE = "pytorch_model.bin"
#: Classes of a checkpoint's tensors (:func:`classify`); only ``linear`` and ``conv`` are
#: analyzed unless ``include`` names ``embeddings`` or ``head``.
TENSOR_CLASSES = ("linear", "conv", "embedding", "head", "norm", "other")
#: What ``include`` may add to the analyzed layers.
INCLUDE = {"embeddings": "embedding", "head": "head"}

# safetensors dtype name -> (numpy dtype of the raw bytes, torch dtype it is viewed as)
_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = (np.uint8, getattr(torch, _attr))
# torch dtype -> safetensors dtype name (the names of a .bin file's tensors)
_TORCH_NAMES: dict[torch.dtype, str] = {t: name for name, (_, t) in _DTYPES.items()}
for _name, _attr in (("BOOL", "bool"), ("U8", "uint8"), ("I8", "int8"), ("I16", "int16"),
                     ("I32", "int32"), ("I64", "int64"), ("U16", "uint16"), ("U32", "uint32"),
                     ("U64", "uint64")):  # fmt: skip
    if hasattr(torch, _attr):
        _TORCH_NAMES[getattr(torch, _attr)] = _name
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8,
             "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # fmt: skip
#: ``model_type`` s of ``config.json`` whose models use transformers' ``Conv1D`` (a linear layer
#: whose weight is stored ``in × out``, the transpose of ``nn.Linear``'s), and the modules that
#: are ``Conv1D`` in them: those weights are read transposed, so that rows are outputs as for
#: every other layer (the graph is the same; the sides, the IMDB groups, N:M along the input and
#: the degree columns depend on it).
CONV1D_MODELS = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
CONV1D_MODULES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})
#: A safetensors header larger than this is not believed (the format's own limit is 100 MB).
_MAX_HEADER = 100_000_000

_EMBED_PART = re.compile(r"(^|_)(embed|embeddings|embed_tokens|embed_positions)($|_)")
_EMBED_NAMES = {"wte", "wpe", "shared", "word_embeddings", "position_embeddings", "tok_embeddings"}
_HEAD_NAMES = {"lm_head", "embed_out", "output"}
_NORM_PART = re.compile(r"(norm|^ln_|^ln$|_ln$|layernorm)", re.IGNORECASE)


def classify(name: str, shape: Sequence[int], dtype: str = "F32") -> str:
    """The class of a checkpoint tensor, from its name and shape (:data:`TENSOR_CLASSES`).

    ``embedding``: a 2-D weight of a module named ``embed*``, ``*_embeddings``, ``wte``,
    ``wpe``, ``shared``; ``head``: a 2-D weight of ``lm_head``, ``embed_out`` or ``output`` (the
    LM head, often tied to the embedding); ``linear`` / ``conv``: another floating-point 2-D /
    4-D ``*.weight``; ``norm``: a 1-D weight of a ``*norm*`` or ``ln_*`` module; ``other``:
    everything else (biases, buffers, integer or quantized tensors, 1-D weights).

    Examples
    --------
    >>> classify("model.layers.0.mlp.up_proj.weight", (11008, 4096))
    'linear'
    >>> classify("model.embed_tokens.weight", (32000, 4096)), classify("lm_head.weight", (32000, 4096))
    ('embedding', 'head')
    >>> classify("model.norm.weight", (4096,))
    'norm'
    """
    parts = name.split(".")
    if parts[-1] != "weight" or dtype not in _DTYPES:
        return "other"
    module = parts[-2] if len(parts) >= 2 else ""
    if len(shape) == 1:
        return "norm" if _NORM_PART.search(module) else "other"
    if len(shape) == 2:
        if module in _HEAD_NAMES:
            return "head"
        if module in _EMBED_NAMES or _EMBED_PART.search(module):
            return "embedding"
        return "linear"
    if len(shape) == 4:
        return "conv"
    return "other"


def natural_key(name: str) -> tuple:
    """Sort key of a tensor name with its numbers compared as numbers.

    Examples
    --------
    >>> sorted(["h.10.w", "h.9.w", "emb.w"], key=natural_key)
    ['emb.w', 'h.9.w', 'h.10.w']
    """
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint: where its bytes are and what it is."""

    name: str
    file: Path
    dtype: str  # safetensors dtype name ("BF16", "F32", ...)
    shape: tuple[int, ...]
    start: int  # absolute byte offset in ``file`` (-1 in a .bin file: torch.load locates it)
    nbytes: int
    cls: str  # classify()
    transposed: bool = False  # stored ``in × out`` (transformers' Conv1D): read transposed
    fmt: str = "safetensors"  # the file's format: "safetensors" or "torch" (a .bin pickle)

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """The shape as analyzed, ``out × in`` (:attr:`shape` reversed for a Conv1D weight)."""
        return self.shape[::-1] if self.transposed else self.shape

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset of its data; checked against the
    file's size (every tensor's byte range must lie in the file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise MaskFileError(path, "truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise MaskFileError(
                    path, f"truncated or corrupt safetensors file (header of {n} bytes)"
                )
            raw = f.read(n)
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MaskFileError(path, f"corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise MaskFileError(path, "corrupt safetensors header (not a JSON object)")
    base = 8 + n
    data_size = size - base
    for key, d in header.items():
        if key == "__metadata__":
            continue
        ok = (
            isinstance(d, dict)
            and isinstance(d.get("dtype"), str)
            and isinstance(d.get("shape"), list)
            and all(isinstance(s, int) and s >= 0 for s in d["shape"])
            and isinstance(d.get("data_offsets"), list)
            and len(d["data_offsets"]) == 2
            and all(isinstance(o, int) for o in d["data_offsets"])
        )
        if not ok:
            raise MaskFileError(path, f"corrupt safetensors header entry for tensor {key!r}")
        begin, end = d["data_offsets"]
        item = _ITEMSIZE.get(d["dtype"])
        if item is not None and end - begin != item * math.prod(d["shape"]):
            raise MaskFileError(
                path, f"tensor {key!r}: {end - begin} bytes do not hold a {d['dtype']} "
                f"tensor of shape {tuple(d['shape'])}"
            )  # fmt: skip
        if not 0 <= begin <= end or end > data_size:
            raise MaskFileError(
                path,
                f"truncated safetensors file: tensor {key!r} ends at byte {base + end} of a "
                f"{size}-byte file",
            )
    return header, base


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MaskFileError(path, f"is not valid JSON ({e})") from None


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder read as a Hugging Face model folder: it has a
    ``config.json``, a ``model.safetensors``, a ``pytorch_model.bin`` or the index of either, and
    no ``run.json`` (a run directory)."""
    p = Path(path)
    if not p.is_dir() or (p / "run.json").exists():
        return False
    names = ("config.json", SINGLE_FILE, INDEX_FILE, BIN_FILE, BIN_INDEX_FILE)
    return any((p / f).exists() for f in names)


def _shards(folder: Path) -> tuple[list[Path], dict[str, Path] | None, Path | None, str]:
    """The weight files of a folder, the index's tensor -> file map and the index path (both
    None without an index), and the files' format (``"safetensors"`` or ``"torch"``).

    Safetensors first (the index, ``model.safetensors``, any ``*.safetensors``), then PyTorch
    pickles (the index, ``pytorch_model.bin``): transformers' order of preference."""
    for index_name, single_name, fmt in ((INDEX_FILE, SINGLE_FILE, "safetensors"),
                                         (BIN_INDEX_FILE, BIN_FILE, "torch")):  # fmt: skip
        index = folder / index_name
        if index.exists():
            files, by_tensor = _indexed(folder, index)
            return files, by_tensor, index, fmt
        single = folder / single_name
        if single.is_file():
            return [single], None, None, fmt
        found = sorted(folder.glob("*.safetensors")) if fmt == "safetensors" else []
        if found:
            return found, None, None, fmt
    others = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".gguf")
    )
    hint = f" (it has {', '.join(others[:3])}: convert to safetensors)" if others else ""
    raise MaskFileError(
        folder,
        f"holds no model weights: no {SINGLE_FILE}, {INDEX_FILE}, *.safetensors, {BIN_FILE} or "
        f"{BIN_INDEX_FILE}{hint}",
    )


def _indexed(folder: Path, index: Path) -> tuple[list[Path], dict[str, Path]]:
    """The shards an index names (each once, in the index's order) and its tensor -> shard map;
    every shard must be a file inside ``folder``."""
    data = _read_json(index)
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not wmap:
        raise MaskFileError(index, "has no 'weight_map' object naming the shard of each tensor")
    root = folder.resolve()
    files: dict[str, Path] = {}
    by_tensor: dict[str, Path] = {}
    for tensor, rel in wmap.items():
        if not isinstance(rel, str) or not rel:
            raise MaskFileError(index, f"tensor {tensor!r}: shard {rel!r} is not a file name")
        if rel not in files:
            shard = folder / rel
            if Path(rel).is_absolute() or not shard.resolve().is_relative_to(root):
                raise MaskFileError(
                    index, f"shard {rel!r} (of tensor {tensor!r}) points outside the model folder"
                )
            if shard.is_dir():  # "." (the folder itself) or a subfolder: not a file
                raise MaskFileError(
                    index, f"tensor {tensor!r}: shard {rel!r} is a folder, not a weights file"
                )
            if not shard.is_file():
                raise MaskFileError(
                    shard, f"is named in {index.name} (tensor {tensor!r}) but is missing"
                )
            files[rel] = shard
        by_tensor[tensor] = files[rel]
    return list(files.values()), by_tensor


def _torch_dtype(t: torch.Tensor) -> str:
    """The safetensors name of a tensor's dtype (``"BF16"``); torch's name for another dtype or
    layout (never analyzed: :func:`classify` calls it ``other``)."""
    if t.layout == torch.strided and not t.is_quantized and t.dtype in _TORCH_NAMES:
        return _TORCH_NAMES[t.dtype]
    name = str(t.dtype).removeprefix("torch.")
    return name if t.layout == torch.strided else f"{name} ({str(t.layout).removeprefix('torch.')})"


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a ``.bin`` file, memory-mapped (:func:`torch_load` with ``mmap``: no
    tensor's bytes are read); anything but a dict of names to tensors is an error."""
    state = torch_load(path, mmap=True)
    what = "a dict of tensor names to tensors, as model.state_dict() gives"
    if not isinstance(state, dict):
        raise MaskFileError(path, f"holds a {type(state).__name__}, not a state dict ({what})")
    for key, value in state.items():
        if not isinstance(key, str):
            raise MaskFileError(
                path, f"holds the key {key!r} ({type(key).__name__}): not a state dict ({what})"
            )
        if not isinstance(value, torch.Tensor):
            raise MaskFileError(
                path,
                f"holds a {type(value).__name__} under {key!r}: not a state dict ({what})",
            )
    return state


def _torch_items(path: Path) -> list[tuple[str, str, tuple[int, ...], int]]:
    """``(name, dtype, shape, bytes)`` of every tensor of a ``.bin`` file, in its order."""
    state = _state_dict(path)
    return [(k, _torch_dtype(t), tuple(t.shape), t.numel() * t.element_size())
            for k, t in state.items()]  # fmt: skip


def _safetensors_items(path: Path) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """``(name, dtype, shape, start, bytes)`` of every tensor of a safetensors file, by offset."""
    header, base = _header(path)
    items = [(k, d) for k, d in header.items() if k != "__metadata__"]
    out = []
    for name, d in sorted(items, key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = d["data_offsets"]
        out.append((name, d["dtype"], tuple(d["shape"]), base + begin, end - begin))
    return out


class HFSource:
    """A model's weights, listed from the safetensors headers (or the pickles of ``.bin`` files)
    and read one tensor at a time.

    Parameters
    ----------
    path : pathlib.Path
        A Hugging Face model folder (safetensors or ``.bin`` weights) or one ``.safetensors``
        file.
    layers : sequence of str, optional
        Glob patterns (:mod:`fnmatch`: ``*`` also matches dots) on tensor names: only matching
        tensors are analyzed. Default: every tensor of an analyzed class.
    include : iterable of str
        Classes analyzed besides ``linear`` and ``conv``: ``"embeddings"``, ``"head"``.

    Attributes
    ----------
    entries : list of TensorEntry
        Every tensor of the checkpoint, in file order (shard order, then offset; a ``.bin``
        file's in the order of its dict).
    layers : list of TensorEntry
        The analyzed ones, in the natural order of their names (:func:`natural_key`: block 2
        before block 10), whatever the sharding.
    config : dict
        ``config.json`` (empty without one); for a single weights file, the ``config.json``
        beside it when there is a readable one (a file taken out of its model folder is read
        as the folder would be: a GPT-2 ``Conv1D`` weight transposed).
    files : list of pathlib.Path
        The weight files read.
    format : str
        Their format: ``"safetensors"``, or ``"torch"`` for ``.bin`` pickles.
    """

    def __init__(self, path: Path, layers: Sequence[str] | None = None,
                 include: Iterable[str] = ()):  # fmt: skip
        self.path = path
        include = tuple(include)
        for item in include:
            if item not in INCLUDE:
                raise UnknownNameError("tensor class to include", item, INCLUDE)
        self.include = include
        self.config: dict[str, Any] = {}
        if path.is_dir():
            cfg = path / "config.json"
            if cfg.exists():
                data = _read_json(cfg)
                if not isinstance(data, dict):
                    raise MaskFileError(cfg, "is not a JSON object")
                self.config = data
            files, by_tensor, index, fmt = _shards(path)
        else:
            fmt = "torch" if path.suffix.lower() == ".bin" else "safetensors"
            files, by_tensor, index = [path], None, None
            self.config = _neighbour_config(path)
        self.files = files
        self.format = fmt
        self._checksums: dict[Path, dict[int, frozenset[int]]] = {}
        conv1d = self.config.get("model_type") in CONV1D_MODELS
        self.entries: list[TensorEntry] = []
        seen: dict[str, Path] = {}
        for file in files:
            if fmt == "torch":  # the zip's directory and pickle are checked before unpickling
                self._checksums[file] = record_checksums(file)
                items = [(n, dt, sh, -1, nb) for n, dt, sh, nb in _torch_items(file)]
            else:
                items = _safetensors_items(file)
            for name, dtype, shape, start, nbytes in items:
                if by_tensor is not None and by_tensor.get(name) != file:
                    continue  # the index says another shard holds it (or nothing does)
                if name in seen:
                    raise MaskFileError(file, f"tensor {name!r} is also in {seen[name].name}")
                seen[name] = file
                cls = classify(name, shape, dtype)
                parts = name.split(".")
                flip = (conv1d and cls == "linear" and len(parts) >= 2
                        and parts[-2] in CONV1D_MODULES)  # fmt: skip
                self.entries.append(TensorEntry(name, file, dtype, shape, start, nbytes, cls,
                                                flip, fmt))  # fmt: skip
        if by_tensor is not None:
            missing = [t for t in by_tensor if t not in seen]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise MaskFileError(
                    by_tensor[missing[0]],
                    f"does not hold tensor {missing[0]!r}{more}, which "
                    f"{index.name if index else INDEX_FILE} places there",
                )
        wanted = {"linear", "conv", *(INCLUDE[i] for i in include)}
        self.patterns = tuple(layers or ())
        chosen = [e for e in self.entries if e.cls in wanted and self._selected(e.name)]
        self.layers = sorted(chosen, key=lambda e: natural_key(e.name))
        if not self.layers:
            what = f" matching --layers {', '.join(self.patterns)}" if self.patterns else ""
            raise MaskFileError(path, f"holds no weight matrices to analyze{what}")

    def _selected(self, name: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    @property
    def skipped(self) -> list[TensorEntry]:
        """Tensors not analyzed (norms, biases, embeddings and head unless included, ...)."""
        chosen = {e.name for e in self.layers}
        return [e for e in self.entries if e.name not in chosen]

    def read(self, entry: TensorEntry) -> torch.Tensor:
        """The tensor's values (a new CPU tensor: of a safetensors file, one positioned read, no
        memory map; of a ``.bin`` file, copied out of a map of the file that is dropped before
        this returns).

        Raises
        ------
        MaskFileError
            When the file cannot be read, was cut short or changed since it was opened, its bytes
            do not match their checksum (``.bin``), or the weights are not finite.
        """
        t = self._read_torch(entry) if entry.fmt == "torch" else self._read_safetensors(entry)
        if not bool(torch.isfinite(t).all()):
            raise MaskFileError(entry.file, f"tensor {entry.name!r} has NaN or infinite weights")
        return t

    def _read_torch(self, entry: TensorEntry) -> torch.Tensor:
        """A tensor of a ``.bin`` file: the file is mapped again (torch's restricted unpickler
        reads its pickle), the tensor's storage checked against the zip's CRC-32s and copied, and
        the map dropped with the state dict when this returns, so that the pages it touched do
        not stay resident (a map kept over a pass would hold the whole file's pages)."""
        state = _state_dict(entry.file)
        t = state.get(entry.name)
        if t is None or tuple(t.shape) != entry.shape or _torch_dtype(t) != entry.dtype:
            raise MaskFileError(entry.file, f"tensor {entry.name!r} changed since it was opened")
        check_storage(entry.file, entry.name, t, self._checksums[entry.file])
        return torch.empty(entry.shape, dtype=t.dtype).copy_(t)

    def _read_safetensors(self, entry: TensorEntry) -> torch.Tensor:
        np_dtype, t_dtype = _DTYPES[entry.dtype]
        count = entry.numel
        try:
            with open(entry.file, "rb") as f:
                arr = np.fromfile(f, dtype=np_dtype, count=count, offset=entry.start)
        except OSError as e:
            raise MaskFileError(entry.file, f"cannot read ({os_problem(e)})") from None
        if arr.size != count:
            raise MaskFileError(
                entry.file, f"truncated safetensors file: tensor {entry.name!r} is cut short"
            )
        t = torch.from_numpy(arr.reshape(entry.shape))
        return t.view(t_dtype) if t.dtype != t_dtype else t

    def layer(self, entry: TensorEntry) -> tuple[str, torch.Tensor, torch.Tensor]:
        """``(name, mask, weight)`` of one analyzed tensor, ``out × in``: the mask is its nonzero
        entries (a Conv1D weight transposed, :data:`CONV1D_MODELS`)."""
        w = self.read(entry)
        if entry.transposed:
            w = w.T.contiguous()
        return entry.name, w != 0, w

    def iter_layers(self, entries: Sequence[TensorEntry] | None = None
                    ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:  # fmt: skip
        """``(name, mask, weight)`` of each analyzed tensor (or of ``entries``), read lazily."""
        for e in self.layers if entries is None else entries:
            yield self.layer(e)

    @property
    def nbytes(self) -> int:
        """Bytes of the analyzed tensors."""
        return sum(e.nbytes for e in self.layers)


def _neighbour_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` beside the weights file ``path``: a JSON object, else ``{}`` (none,
    unreadable, or not an object: it may belong to something else)."""
    cfg = path.parent / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def open_source(path: str | os.PathLike, *, layers: Sequence[str] | None = None,
                include: Iterable[str] = ()) -> HFSource:  # fmt: skip
    """A :class:`HFSource` for a Hugging Face model folder (safetensors, or ``.bin`` pickles
    read with ``weights_only=True``), one ``.safetensors`` file or one ``.bin`` state dict.

    Raises
    ------
    MaskFileError
        For a folder without weights, an index naming a missing shard or a path outside the
        folder, a truncated shard, a corrupt header, or no tensor to analyze; for ``.bin`` files
        also a corrupt or legacy (non-zip) file, a pickle that refers to other objects than
        tensors, or one that holds other than a dict of tensors (each names the file).
    """
    from ..files import input_path

    p = input_path(path)
    if not p.is_dir() and p.suffix.lower() not in (".safetensors", ".bin"):
        raise MaskFileError(p, "is neither a model folder nor a .safetensors or .bin file")
    return HFSource(p, layers, include)


def llama_shapes(hidden: int = 4096, intermediate: int = 11008, blocks: int = 32,
                 vocab: int = 32000) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Tensor names and shapes of a Llama checkpoint (transformers' ``LlamaForCausalLM``),
    in file order: the embedding, per block the attention projections ``q, k, v, o``
    (``hidden²``), the MLP ``gate, up`` (``intermediate × hidden``) and ``down``
    (``hidden × intermediate``) and the two norms, then the final norm and the LM head.
    The defaults are Llama-2-7B's."""
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for b in range(blocks):
        p = f"model.layers.{b}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{p}self_attn.{name}.weight"] = (hidden, hidden)
        out[f"{p}mlp.gate_proj.weight"] = (intermediate, hidden)
        out[f"{p}mlp.up_proj.weight"] = (intermediate, hidden)
        out[f"{p}mlp.down_proj.weight"] = (hidden, intermediate)
        out[f"{p}input_layernorm.weight"] = (hidden,)
        out[f"{p}post_attention_layernorm.weight"] = (hidden,)
    out["model.norm.weight"] = (hidden,)
    out["lm_head.weight"] = (vocab, hidden)
    return out


def write_folder(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *,
                 shards: int = 1, config: dict | None = None, fmt: str = "safetensors") -> Path:  # fmt: skip
    """Write ``tensors`` as a Hugging Face model folder: ``config.json`` and one
    ``model.safetensors``, or ``shards`` files ``model-0000i-of-0000n.safetensors`` (about
    equal bytes, in order) with ``model.safetensors.index.json``. Every file atomically.

    With ``fmt="bin"`` the weights are PyTorch pickles instead (``torch.save`` of a dict, zip
    format): ``pytorch_model.bin``, or ``pytorch_model-0000i-of-0000n.bin`` with
    ``pytorch_model.bin.index.json``, transformers' names.

    For tests, benchmarks and examples; the folder is created if missing.
    """
    from safetensors.torch import save as st_save

    from ..files import atomic_write_bytes
    from .torch_file import save_bytes

    if fmt not in ("safetensors", "bin"):
        raise UnknownNameError("model folder format", fmt, ("safetensors", "bin"))

    def encode(part: dict[str, torch.Tensor]) -> bytes:
        if fmt == "bin":
            return save_bytes(part)
        return st_save(part, metadata={"format": "pt"})

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **(config or {})}
    atomic_write_bytes(folder / "config.json", json.dumps(cfg, indent=2).encode())
    names = list(tensors)
    if shards <= 1:
        single = BIN_FILE if fmt == "bin" else SINGLE_FILE
        atomic_write_bytes(folder / single, encode({k: v.contiguous() for k, v in tensors.items()}))
        return folder
    sizes = np.cumsum([tensors[k].numel() * tensors[k].element_size() for k in names])
    cut = np.minimum((sizes * shards - 1) // max(int(sizes[-1]), 1), shards - 1)
    weight_map = {}
    for s in range(shards):
        stem = "pytorch_model" if fmt == "bin" else "model"
        suffix = "bin" if fmt == "bin" else "safetensors"
        fname = f"{stem}-{s + 1:05d}-of-{shards:05d}.{suffix}"
        part = {k: tensors[k].contiguous() for k, c in zip(names, cut, strict=True) if c == s}
        atomic_write_bytes(folder / fname, encode(part))
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": int(sizes[-1])}, "weight_map": weight_map}
    index_file = BIN_INDEX_FILE if fmt == "bin" else INDEX_FILE
    atomic_write_bytes(folder / index_file, json.dumps(index, indent=2).encode())
    return folder
