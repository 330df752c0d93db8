"""The mask-event recorder: every mask change of a run becomes one event of its run directory.

Layout (docs/formats.md, read by :func:`masktopo.store.read_run`)::

    run.json                        resolved config, seeds, versions, layer list, layer graph
    events.jsonl                    one JSON line per event
    masks/event-NNNNNN.safetensors  the event's masks (bit-packed), with weights when asked

Crash safety: each mask file is written atomically (temp file, fsync, rename) *before* its line is
appended to events.jsonl, and the line is appended with one ``write`` and fsynced, so a stopped
run leaves complete events only (a cut-off last line is ignored by the reader). On ``--resume``
:meth:`Recorder.truncate` drops the events written after the checkpoint being resumed.

Off the critical path: :meth:`Recorder.record` only copies the masks (and weights when dumped) to
host memory; packing, counting and writing happen in one background thread, in order. An error
there (a full disk) is raised by the next :meth:`record`, :meth:`flush` or :meth:`close`.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..errors import MaskFileError
from ..masks import MaskSet

EVENT_DIR = "masks"


def event_file(k: int) -> str:
    """The mask file of event ``k``, relative to the run directory."""
    return f"{EVENT_DIR}/event-{k:06d}.safetensors"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


class Recorder:
    """Write the events of one run directory (a no-op recorder when ``out`` is None).

    Parameters
    ----------
    out : pathlib.Path or None
        The run directory (it must exist; ``run.json`` is written by :meth:`write_run_json`).
    n_events : int
        Events already in the directory (a resumed run continues the numbering).
    background : bool
        Pack and write in a background thread (default); False writes synchronously.
    """

    def __init__(self, out: Path | None, *, n_events: int = 0, background: bool = True):
        self.out = out
        self.n_events = n_events
        self._pool = ThreadPoolExecutor(1, "masktopo-recorder") if background and out else None
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        if out is not None:
            (out / EVENT_DIR).mkdir(exist_ok=True)

    # -- run.json ------------------------------------------------------------------------------
    def write_run_json(self, obj: dict) -> None:
        """Write ``run.json`` atomically."""
        if self.out is None:
            return
        from ..store import _atomic_write_json

        _atomic_write_json(self.out / "run.json", _jsonable(obj))

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
        """Record one event; returns its index. Copies to host now, writes in the background."""
        self._raise_failed()
        k = self.n_events
        self.n_events += 1
        if self.out is None:
            return k
        host_masks = {n: m.detach().to("cpu", copy=True) for n, m in masks.items()}
        host_w = None
        if weights is not None:
            host_w = {n: w.detach().to("cpu", torch.float32, copy=True) for n, w in weights.items()}
        line = {"event": k, "step": int(step), "epoch": float(epoch), "kind": kind}
        extra = _jsonable(scalars or {})
        job = (k, host_masks, host_w, line, extra)
        if self._pool is None:
            self._write(*job)
        else:
            self._pending.append(self._pool.submit(self._write, *job))
        return k

    def _write(self, k, masks, weights, line, extra) -> None:
        from ..store import save

        for name, m in masks.items():
            if m.dtype != torch.bool:
                masks[name] = m.to(torch.bool)
        if weights is not None:
            weights = {n: w * masks[n] for n, w in weights.items()}
        ms = MaskSet(masks, weights=weights)
        rel = event_file(k)
        save(self.out / rel, ms)
        nnz = ms.nnz_per_layer()
        numel = sum(m.numel() for m in masks.values())
        full = {
            **line,
            "file": rel,
            "has_weights": weights is not None,
            "nnz": nnz,
            "density": (sum(nnz.values()) / numel) if numel else 1.0,
            **extra,
        }
        data = (json.dumps(full) + "\n").encode("utf-8")
        path = self.out / "events.jsonl"
        try:
            with self._lock, open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise MaskFileError(path, f"cannot append event {k} ({e.strerror or e})") from None

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

    def truncate(self, n_events: int) -> None:
        """Keep only events ``0 .. n_events-1`` (on resume): rewrite events.jsonl atomically
        and delete later mask files."""
        self.n_events = n_events
        if self.out is None:
            return
        from ..store import _atomic_write

        path = self.out / "events.jsonl"
        lines = path.read_bytes().split(b"\n") if path.exists() else []
        kept = [ln for ln in lines if ln.strip()][:n_events]
        if len(kept) < n_events:
            raise MaskFileError(path, f"has {len(kept)} events, the checkpoint expects {n_events}")
        data = b"".join(ln + b"\n" for ln in kept)
        _atomic_write(path, lambda f: f.write(data))
        for p in (self.out / EVENT_DIR).glob("event-*.safetensors"):
            try:
                k = int(p.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            if k >= n_events:
                p.unlink(missing_ok=True)
