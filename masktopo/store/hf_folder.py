"""Hugging Face model folders, read lazily tensor by tensor (docs/llm.md, docs/formats.md).

A folder holds ``config.json`` and its weights as one ``model.safetensors`` or as shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor: shard file}}``). Pruned LLMs
(SparseGPT, Wanda, 2:4 semi-structured) are published this way with their pruned weights stored as
zeros, so a layer's mask is its nonzero weights.

Only the safetensors *headers* are read up front (8 bytes of length, then JSON: dtype, shape and
byte range of every tensor), and every range is checked against its file's size. A tensor's bytes
are read with one positioned read when it is asked for, into memory that is freed when the caller
drops the tensor: nothing is memory-mapped, so the resident memory of a pass over a model is that
of the few tensors in use, not that of the model (file-backed pages of a map count as resident).

Every problem raises :class:`~masktopo.errors.MaskFileError` naming the file: a folder without
weights, a shard named in the index but missing, an index entry that points outside the folder, a
truncated shard, a tensor the index names but its shard does not hold.
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

__all__ = [
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
    start: int  # absolute byte offset in ``file``
    nbytes: int
    cls: str  # classify()
    transposed: bool = False  # stored ``in × out`` (transformers' Conv1D): read transposed

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
    ``config.json``, a ``model.safetensors`` or an index, and no ``run.json`` (a run directory)."""
    p = Path(path)
    if not p.is_dir() or (p / "run.json").exists():
        return False
    return any((p / f).exists() for f in ("config.json", SINGLE_FILE, INDEX_FILE))


def _shards(folder: Path) -> tuple[list[Path], dict[str, Path] | None, Path | None]:
    """The weight files of a folder, the index's tensor -> file map and the index path (both
    None without an index)."""
    index = folder / INDEX_FILE
    if index.exists():
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
                        index,
                        f"shard {rel!r} (of tensor {tensor!r}) points outside the model folder",
                    )
                if not shard.is_file():
                    raise MaskFileError(
                        shard, f"is named in {INDEX_FILE} (tensor {tensor!r}) but is missing"
                    )
                files[rel] = shard
            by_tensor[tensor] = files[rel]
        return list(files.values()), by_tensor, index
    single = folder / SINGLE_FILE
    if single.is_file():
        return [single], None, None
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found, None, None
    others = sorted(
        p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf")
    )
    hint = f" (it has {', '.join(others[:3])}: convert to safetensors)" if others else ""
    raise MaskFileError(
        folder, f"holds no model weights: no {SINGLE_FILE}, {INDEX_FILE} or *.safetensors{hint}"
    )


class HFSource:
    """A model's weights, listed from the safetensors headers and read one tensor at a time.

    Parameters
    ----------
    path : pathlib.Path
        A Hugging Face model folder or one ``.safetensors`` file.
    layers : sequence of str, optional
        Glob patterns (:mod:`fnmatch`: ``*`` also matches dots) on tensor names: only matching
        tensors are analyzed. Default: every tensor of an analyzed class.
    include : iterable of str
        Classes analyzed besides ``linear`` and ``conv``: ``"embeddings"``, ``"head"``.

    Attributes
    ----------
    entries : list of TensorEntry
        Every tensor of the checkpoint, in file order (shard order, then offset).
    layers : list of TensorEntry
        The analyzed ones, in the natural order of their names (:func:`natural_key`: block 2
        before block 10), whatever the sharding.
    config : dict
        ``config.json`` (empty without one).
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
            files, by_tensor, _ = _shards(path)
        else:
            files, by_tensor = [path], None
        self.files = files
        conv1d = self.config.get("model_type") in CONV1D_MODELS
        self.entries: list[TensorEntry] = []
        seen: dict[str, Path] = {}
        for file in files:
            header, base = _header(file)
            items = [(k, d) for k, d in header.items() if k != "__metadata__"]
            for name, d in sorted(items, key=lambda kv: kv[1]["data_offsets"][0]):
                if by_tensor is not None and by_tensor.get(name) != file:
                    continue  # the index says another shard holds it (or nothing does)
                if name in seen:
                    raise MaskFileError(file, f"tensor {name!r} is also in {seen[name].name}")
                seen[name] = file
                shape = tuple(d["shape"])
                begin, end = d["data_offsets"]
                cls = classify(name, shape, d["dtype"])
                parts = name.split(".")
                flip = (conv1d and cls == "linear" and len(parts) >= 2
                        and parts[-2] in CONV1D_MODULES)  # fmt: skip
                self.entries.append(TensorEntry(name, file, d["dtype"], shape, base + begin,
                                                end - begin, cls, flip))  # fmt: skip
        if by_tensor is not None:
            missing = [t for t in by_tensor if t not in seen]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise MaskFileError(
                    by_tensor[missing[0]],
                    f"does not hold tensor {missing[0]!r}{more}, which {INDEX_FILE} places there",
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
        """The tensor's values (a new CPU tensor; one positioned read, no memory map).

        Raises
        ------
        MaskFileError
            When the file cannot be read, was cut short since it was opened, or the weights are
            not finite.
        """
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
        if t.dtype != t_dtype:
            t = t.view(t_dtype)
        if not bool(torch.isfinite(t).all()):
            raise MaskFileError(entry.file, f"tensor {entry.name!r} has NaN or infinite weights")
        return t

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


def open_source(path: str | os.PathLike, *, layers: Sequence[str] | None = None,
                include: Iterable[str] = ()) -> HFSource:  # fmt: skip
    """A :class:`HFSource` for a Hugging Face model folder or one ``.safetensors`` file.

    Raises
    ------
    MaskFileError
        For a folder without weights, an index naming a missing shard or a path outside the
        folder, a truncated shard, a corrupt header, or no tensor to analyze (each names the file).
    """
    from ..files import input_path

    p = input_path(path)
    if not p.is_dir() and p.suffix.lower() != ".safetensors":
        raise MaskFileError(p, "is neither a model folder nor a .safetensors file")
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
                 shards: int = 1, config: dict | None = None) -> Path:  # fmt: skip
    """Write ``tensors`` as a Hugging Face model folder: ``config.json`` and one
    ``model.safetensors``, or ``shards`` files ``model-0000i-of-0000n.safetensors`` (about
    equal bytes, in order) with ``model.safetensors.index.json``. Every file atomically.

    For tests, benchmarks and examples; the folder is created if missing.
    """
    from safetensors.torch import save as st_save

    from ..files import atomic_write_bytes

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **(config or {})}
    atomic_write_bytes(folder / "config.json", json.dumps(cfg, indent=2).encode())
    names = list(tensors)
    if shards <= 1:
        data = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
        atomic_write_bytes(folder / SINGLE_FILE, data)
        return folder
    sizes = np.cumsum([tensors[k].numel() * tensors[k].element_size() for k in names])
    cut = np.minimum((sizes * shards - 1) // max(int(sizes[-1]), 1), shards - 1)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k, c in zip(names, cut, strict=True) if c == s}
        atomic_write_bytes(folder / fname, st_save(part, metadata={"format": "pt"}))
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": int(sizes[-1])}, "weight_map": weight_map}
    atomic_write_bytes(folder / INDEX_FILE, json.dumps(index, indent=2).encode())
    return folder
