"""Writing run directories: run.json, mask events, checkpoints and summaries.

Crash safety: ``run.json`` is written (atomically) before anything else; each event's mask file is
written atomically *before* its line is appended to ``events.jsonl``, and the line is appended
with one ``write`` and fsynced, so a stopped run leaves complete events only (a cut-off last line
is ignored by the reader). A resumed run drops the events written after its checkpoint
(:meth:`RunWriter.truncate`), after checking that the events up to the checkpoint are the ones the
checkpoint saw (:meth:`RunWriter.digest`).

Off the critical path: :meth:`RunWriter.record` only copies the masks (and the kept weights) to
host memory; packing, counting and writing happen in one background thread, in order. An error
there (a full disk) is raised by the next :meth:`~RunWriter.record`, :meth:`~RunWriter.flush` or
:meth:`~RunWriter.close`. From a CUDA device the copies are only launched (asynchronous, into
pinned memory, ordered on the current stream before anything that later changes the tensors): the
writer thread waits for them and gathers the kept weights there, so recording an event makes no
host synchronisation in the training loop (:class:`_HostCopies`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import MaskFileError
from ..files import atomic_write_bytes, atomic_write_json, os_problem
from ..masks import MaskSet
from ..store import save_kept, torch_bytes, torch_load
from .layout import (
    CHECKPOINT_FILE,
    EVENTS_FILE,
    MASKS_DIR,
    RUN_FILE,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    SUMMARY_FILE,
    event_file,
    event_index,
)

__all__ = [
    "RunWriter",
    "jsonable",
    "read_checkpoint",
    "run_header",
    "write_checkpoint",
]


def jsonable(value: Any) -> Any:
    """``value`` with tensors as numbers or lists, NaN as None, tuples as lists, keys as str."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def run_header(kind: str) -> dict[str, Any]:
    """The keys every run.json starts with: format, version, kind, creation time, version."""
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "kind": kind,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "masktopo_version": __version__,
    }


def write_checkpoint(run: Path, obj: dict) -> None:
    """Write the run's resume point atomically (serialized in memory first, so that a full disk
    is one clear error and the previous checkpoint stays intact)."""
    atomic_write_bytes(run / CHECKPOINT_FILE, torch_bytes(obj))


def read_checkpoint(run: Path) -> Any | None:
    """The run's checkpoint (read with ``weights_only=True``), or None when it has none."""
    path = run / CHECKPOINT_FILE
    if not path.exists():
        return None
    return torch_load(path)


#: Device types whose event tensors go to host memory asynchronously (:class:`_HostCopies`).
_ASYNC_COPY_DEVICES = ("cuda",)


def _copy_to_host(t: torch.Tensor, pinned: bool) -> torch.Tensor:
    """A contiguous host tensor of ``t``'s shape and dtype that ``t`` is being copied into,
    asynchronously from a CUDA device into pinned memory (a ``t`` in another memory format,
    channels-last, is made contiguous on the device first, by ``copy_``)."""
    out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pinned)
    out.copy_(t, non_blocking=pinned)
    return out


class _HostCopies:
    """An event's masks and kept weights (float32) on their way to host memory.

    On the CPU (or a device without asynchronous copies here) the masks are copied and the kept
    weights gathered now. From CUDA the masks and the dense weights are copied asynchronously
    into pinned memory (one CUDA event per device marks the end); :meth:`result`, in the writer
    thread, waits for that event and gathers the kept weights on the host. A dense copy moves
    more bytes than the kept values would, but gathering them on the device needs their count
    first, a host synchronisation. The copies are ordered on the current stream, before the
    optimizer steps that later change the weights.
    """

    def __init__(self, masks: dict[str, torch.Tensor], weights: dict[str, torch.Tensor] | None):
        tensors = [*masks.values(), *(weights or {}).values()]
        self.events: list = []
        self.asynchronous = bool(tensors) and all(
            t.device.type in _ASYNC_COPY_DEVICES for t in tensors
        )
        if not self.asynchronous:
            self.masks = {n: m.detach().to("cpu", torch.bool, copy=True) for n, m in masks.items()}
            self.kept = None
            if weights is not None:  # gathered on the device: only the kept values travel
                self.kept = {n: w.detach()[masks[n].to(torch.bool)].to("cpu", torch.float32,
                                                                        copy=True)
                             for n, w in weights.items()}  # fmt: skip
            return
        pinned = torch.cuda.is_available()
        self.masks = {n: _copy_to_host(m.detach().to(torch.bool), pinned)
                      for n, m in masks.items()}  # fmt: skip
        self.dense = None
        if weights is not None:
            self.dense = {n: _copy_to_host(w.detach(), pinned) for n, w in weights.items()}
        for device in {t.device for t in tensors if t.device.type == "cuda"}:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            self.events.append(event)

    def result(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(masks, kept weights or None) in host memory, once the copies are done."""
        if not self.asynchronous:
            return self.masks, self.kept
        for event in self.events:
            event.synchronize()
        kept = None
        if self.dense is not None:
            kept = {n: w[self.masks[n]].to(torch.float32) for n, w in self.dense.items()}
        return self.masks, kept


class RunWriter:
    """Write one run directory (a no-op writer when ``out`` is None).

    Parameters
    ----------
    out : pathlib.Path or None
        The run directory (it must exist).
    n_events : int
        Events already in the directory (a resumed run continues the numbering).
    background : bool
        Pack and write events in a background thread (default); False writes synchronously.
    """

    def __init__(self, out: Path | None, *, n_events: int = 0, background: bool = True):
        self.out = out
        self.n_events = n_events
        self._background = background
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self._digest = hashlib.sha256()  # of the events.jsonl lines of events 0 .. n_events-1

    # -- run.json and summary.json -------------------------------------------------------------
    def write_run_json(self, kind: str, fields: dict) -> None:
        """Write ``run.json``: :func:`run_header` ``(kind)`` and ``fields``, atomically."""
        if self.out is not None:
            atomic_write_json(self.out / RUN_FILE, jsonable({**run_header(kind), **fields}))

    def write_summary(self, summary: dict) -> None:
        """Write ``summary.json`` (history and final metrics) atomically."""
        if self.out is not None:
            atomic_write_json(self.out / SUMMARY_FILE, jsonable(summary))

    # -- events --------------------------------------------------------------------------------
    def record(
        self,
        masks: dict[str, torch.Tensor],
        weights: dict[str, torch.Tensor] | None,
        *,
        kind: str,
        step: int,
        epoch: float,
        scalars: dict[str, Any] | None = None,
    ) -> int:
        """Record one event; returns its index. Copies to host now, writes in the background.

        ``weights`` (when given) are stored at the kept positions of the masks only, as
        float32; reading the event gives them back dense, zero where the mask is.
        """
        self._raise_failed()
        k = self.n_events
        self.n_events += 1
        if self.out is None:
            return k
        copies = _HostCopies(masks, weights)
        line = {"event": k, "step": int(step), "epoch": float(epoch), "kind": kind}
        job = (k, copies, line, jsonable(scalars or {}))
        if not self._background:
            self._write(*job)
            return k
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, "masktopo-run-writer")
        self._pending.append(self._pool.submit(self._write, *job))
        return k

    def _write(self, k, copies, line, extra) -> None:
        masks, kept = copies.result()
        ms = MaskSet(masks)
        rel = event_file(k)
        (self.out / MASKS_DIR).mkdir(exist_ok=True)
        save_kept(self.out / rel, ms, kept)
        nnz = ms.nnz_per_layer()
        numel = sum(m.numel() for m in masks.values())
        full = {
            **line,
            "file": rel,
            "has_weights": kept is not None,
            "nnz": nnz,
            "density": (sum(nnz.values()) / numel) if numel else 1.0,
            **extra,
        }
        data = (json.dumps(full) + "\n").encode("utf-8")
        path = self.out / EVENTS_FILE
        try:
            with self._lock, open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                self._digest.update(data)
        except OSError as e:
            raise MaskFileError(path, f"cannot append event {k} ({os_problem(e)})") from None

    def digest(self) -> str:
        """SHA-256 of the events.jsonl lines of the events recorded so far (call :meth:`flush`
        first): a checkpoint keeps it, and :meth:`truncate` checks it on resume."""
        with self._lock:
            return self._digest.hexdigest()

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()  # re-raises a failed write

    def flush(self) -> None:
        """Wait until every recorded event is on disk (raises a failed write's error)."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def truncate(self, n_events: int, digest: str | None = None) -> None:
        """Keep only events ``0 .. n_events-1`` (on resume): rewrite events.jsonl atomically
        and delete later mask files.

        Raises
        ------
        MaskFileError
            When events.jsonl holds fewer events, or (``digest`` given) other events than the
            checkpoint saw: another process wrote the run, or it was edited.
        """
        self.n_events = n_events
        if self.out is None:
            return
        path = self.out / EVENTS_FILE
        try:
            raw = path.read_bytes() if path.exists() else None
        except OSError as e:
            raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
        kept = [ln for ln in (raw or b"").split(b"\n") if ln.strip()][:n_events]
        if len(kept) < n_events:
            raise MaskFileError(path, f"has {len(kept)} events, the checkpoint expects {n_events}")
        data = b"".join(ln + b"\n" for ln in kept)
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise MaskFileError(
                path,
                f"its first {n_events} events are not the ones the checkpoint saw (another "
                "process wrote this run, or the file was edited); cannot resume",
            )
        if raw != data:  # events after the checkpoint, or a cut-off last line: rewrite
            atomic_write_bytes(path, data)
        with self._lock:
            self._digest = hashlib.sha256(data)
        masks_dir = self.out / MASKS_DIR
        if masks_dir.is_dir():
            for p in masks_dir.iterdir():
                k = event_index(p.name)
                if k is not None and k >= n_events:
                    p.unlink(missing_ok=True)
