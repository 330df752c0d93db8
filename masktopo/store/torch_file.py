"""PyTorch checkpoints: read with ``weights_only=True`` (no code in a file ever runs), written as
``torch.nn.utils.prune``-style state dicts (docs/formats.md)."""

from __future__ import annotations

import errno
import importlib
import io
import pickle
import pickletools
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from ..errors import MaskFileError, one_line
from ..masks import MaskSet
from .common import cpu_weights
from .foreign import STATE_DICT_KEYS, find_state_dict, interpret

#: Parts of torch's weights-only unpickler messages that mean "this object is not allowed".
_OBJECT_ERRORS = (
    "GLOBAL",
    "Can only create new object",
    "call reduce",
    "Can only build",
    "imported",
)
#: torch's message for a global from a module it never allows (os, posix, nt, sys); it has no
#: "WeightsUnpickler error:" part, so _OBJECT_ERRORS does not see it.
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked")
#: A legacy (non-zip) torch.save file starts with torch's magic number pickled (protocol 2).
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]
#: A zip archive's first local file header (a zip-format torch.save file starts with one).
_ZIP_MAGIC = b"PK\x03\x04"
_REFUSE = (
    "refusing to unpickle: the checkpoint contains Python objects other than tensors ({}); save "
    "only the state dict (torch.save(model.state_dict(), path))"
)
#: The first op of a legacy torch.save file (its magic number) in pickle protocols 2 to 5 (after
#: the PROTO and FRAME ops), and 0 and 1.
_LEGACY_MAGIC_OPS = (_LEGACY_MAGIC[2:], pickle.dumps(0x1950A86A20F9469CFC6C, protocol=0)[:-1])
#: The most of a protocol 0 or 1 pickle file that is parsed (pickletools) to tell it is one.
_PICKLE_PROBE = 1 << 20
_PLAIN_PICKLE = (
    "refusing to unpickle: a plain pickle file (pickle.dump), not a torch.save checkpoint; "
    "unpickling it could run code: save the state dict with torch.save(model.state_dict(), "
    "path) or as safetensors"
)


def to_bytes(maskset: MaskSet) -> bytes:
    """A prune-style state dict (``<layer>_mask`` as the weight dtype, ``<layer>_orig``),
    serialized in memory so that a failed write is an OSError of the file, not torch's."""
    weights = cpu_weights(maskset)
    state: dict[str, torch.Tensor] = {}
    for name in maskset:
        w = weights.get(name)
        dtype = torch.float32 if w is None else w.dtype
        state[f"{name}_mask"] = maskset[name].detach().cpu().to(dtype)
        if w is not None:
            state[f"{name}_orig"] = w
    return save_bytes(state)


def save_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def torch_load(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only,
    never code; every failure is a one-line :class:`MaskFileError`.

    Parameters
    ----------
    path : pathlib.Path
        The checkpoint.
    mmap : bool
        Map the file instead of reading it (``torch.load(mmap=True)``): a tensor's bytes are read
        from the file when it is touched, and the map lives as long as a tensor of it does. Only
        zip-format files (``torch.save``'s default since PyTorch 1.6) can be mapped: a legacy one
        is an error saying so. The CRC-32 checksums are then not verified up front (that would
        read the whole file): :func:`check_storage` verifies a tensor's bytes when it is read.
    """
    if mmap:
        _require_zip(path)
    else:
        _check_zip_crc(path)
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an unusual pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as e:
        from ..files import os_problem

        if e.errno != errno.EINVAL:
            raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
        # a seek before the start of the file: offsets read from the file point outside it
        problem = "truncated or corrupt checkpoint (an offset in it points outside the file)"
    except pickle.UnpicklingError as e:
        problem = _unpickling_problem(path, e)
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... on bad bytes
        problem = f"truncated or corrupt checkpoint ({one_line(e)})"
    if problem.startswith("truncated or corrupt") and _plain_pickle(path):
        problem = _PLAIN_PICKLE
    raise MaskFileError(path, problem) from None


def _plain_pickle(path: Path) -> bool:
    """Whether ``path`` is a plain pickle file (``pickle.dump``), which torch cannot load (it is
    neither a zip nor a legacy torch.save file) and reports as corrupt. Told without unpickling:
    its first op is not a legacy file's magic number (a legacy file cut short within it is
    truncated), and it starts with the PROTO op of protocol 2 to 5 or (0, 1) is one whole pickle
    (:mod:`pickletools`) of at most :data:`_PICKLE_PROBE` bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
            body = data[2:] if data[:1] == b"\x80" else data
            body = body[9:] if body[:1] == b"\x95" else body  # a FRAME op (protocol >= 4)
            if data.startswith(_ZIP_MAGIC) or any(
                m.startswith(body[: len(m)]) for m in _LEGACY_MAGIC_OPS
            ):
                return False
            if data[:1] == b"\x80":
                return len(data) > 1 and 2 <= data[1] <= 5
            data += f.read(_PICKLE_PROBE - len(data))
            more = f.read(1)
    except OSError as e:
        from ..files import os_problem

        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    stream = io.BytesIO(data)
    try:
        ops = [op.name for op, _, _ in pickletools.genops(stream)]
    except Exception:  # not a pickle (garbage, text), or one cut short
        return False
    return len(ops) > 1 and ops[-1] == "STOP" and stream.tell() == len(data) and not more


def _require_zip(path: Path) -> None:
    """Refuse, before torch opens it, a file that cannot be memory-mapped: a legacy
    (non-zip) ``torch.save`` file, a plain pickle, or one that is not a checkpoint at all."""
    if _plain_pickle(path):
        raise MaskFileError(path, _PLAIN_PICKLE)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as e:
        from ..files import os_problem

        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    if head == _LEGACY_MAGIC:
        raise MaskFileError(
            path,
            "is a legacy (non-zip, PyTorch < 1.6) torch.save file, which cannot be memory-mapped "
            "and so is not read tensor by tensor: re-save it with torch.save (zip format) or "
            "convert it to safetensors",
        )
    if not head.startswith(_ZIP_MAGIC):
        raise MaskFileError(
            path, "truncated or corrupt checkpoint (not a zip archive, the format of torch.save)"
        )


def record_checksums(path: Path) -> dict[int, frozenset[int]]:
    """The CRC-32 checksums of the tensor records (``<archive>/data/<key>``) of a zip-format
    checkpoint, by record size in bytes: what :func:`check_storage` compares a tensor's bytes
    with. The zip's directory and its small records (the pickle, the version) are read and the
    latter verified against their checksums; the tensor records are not read.

    Raises
    ------
    MaskFileError
        For a legacy (non-zip) file, or a truncated or corrupt one (naming ``path``).
    """
    _require_zip(path)
    sums: dict[int, set[int]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if len(parts) >= 2 and parts[-2] == "data":
                    sums.setdefault(info.file_size, set()).add(info.CRC)
                else:
                    z.read(info)  # raises BadZipFile on a CRC-32 mismatch
    except OSError as e:
        from ..files import os_problem

        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
            RuntimeError) as e:  # fmt: skip
        raise MaskFileError(path, f"truncated or corrupt checkpoint ({one_line(e)})") from None
    return {size: frozenset(crcs) for size, crcs in sums.items()}


def check_storage(path: Path, name: str, tensor: torch.Tensor,
                  checksums: dict[int, frozenset[int]]) -> None:  # fmt: skip
    """Verify the bytes of the storage under ``tensor`` (memory-mapped from ``path`` by
    :func:`torch_load`): their CRC-32 must be that of a tensor record of their size
    (:func:`record_checksums`). A flipped byte passes only if it makes the record's checksum equal
    to that of another record of the same size (a chance of about one in 2³² per record).

    Raises
    ------
    MaskFileError
        Naming ``path`` and the tensor ``name``.
    """
    storage = tensor.untyped_storage()
    data = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
    if zlib.crc32(data) not in checksums.get(storage.nbytes(), ()):
        raise MaskFileError(
            path,
            f"truncated or corrupt checkpoint (the bytes of tensor {name!r} do not match the "
            "CRC-32 checksum of a record of their size)",
        )


def _check_zip_crc(path: Path) -> None:
    """Verify the CRC-32 of every member of a zip-format checkpoint (torch.save's default since
    1.6), which torch itself does not check: a flipped byte in a tensor is an error here, not
    silent garbage. Legacy (non-zip) checkpoints carry no checksum."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except OSError as e:
        from ..files import os_problem

        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
            RuntimeError) as e:  # fmt: skip
        raise MaskFileError(path, f"truncated or corrupt checkpoint ({one_line(e)})") from None
    if bad is not None:
        raise MaskFileError(
            path,
            f"truncated or corrupt checkpoint (the bytes of {bad!r} do not match their CRC-32 "
            "checksum)",
        )


def read(path: Path, *, zeros_as_mask: bool, weights: bool) -> tuple[MaskSet, bool]:
    obj = torch_load(path)
    state = find_state_dict(obj)
    if state is None:
        raise MaskFileError(
            path,
            "no state dict found: the checkpoint holds no mapping of names to tensors "
            f"(looked at the top level and under {', '.join(map(repr, STATE_DICT_KEYS))})",
        )
    return interpret(path, state, "torch", zeros_as_mask=zeros_as_mask, weights=weights)


def _torch_global_exists(dotted: str) -> bool:
    """Whether ``dotted`` (``torch.serialization.save``) names an object of torch: a real
    reference in the pickle, not a name cut short by a truncated file."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _unpickling_problem(path: Path, e: Exception) -> str:
    text = str(e)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:  # e.g. os.system: the classic code-running payload
        return _REFUSE.format(f"{blocked.group(1)}, from the blocked module {blocked.group(2)!r}")
    marker = "WeightsUnpickler error:"
    detail = text[text.index(marker) + len(marker) :].strip() if marker in text else ""
    detail = detail.splitlines()[0] if detail else ""
    if not any(s in detail for s in _OBJECT_ERRORS):  # e.g. "Unsupported operand": bad bytes
        return f"truncated or corrupt checkpoint ({one_line(e)})"
    if detail.startswith("Unsupported global: GLOBAL "):
        detail = detail.removeprefix("Unsupported global: GLOBAL ").split(" ")[0]
        # A legacy (non-zip) checkpoint cut short stops mid-name in one of torch's own globals;
        # a whole name of torch's (torch.serialization.save, a gadget) is a real reference.
        if (
            detail.startswith("torch.")
            and not zipfile.is_zipfile(path)
            and not _torch_global_exists(detail)
        ):
            return f"truncated or corrupt checkpoint (unpickling stopped at {detail})"
    return _REFUSE.format(detail[:160])
