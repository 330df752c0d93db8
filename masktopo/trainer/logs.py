"""Live logs of a training run: ``metrics.jsonl``, a plain line per epoch, TensorBoard, W&B.

The training loop (:func:`masktopo.trainer.train`) keeps one :class:`RunLog` and calls it at the
end of every epoch (:meth:`RunLog.epoch`), at every mask event (:meth:`RunLog.event`) and at the
end (:meth:`RunLog.finish`; :meth:`RunLog.close` after an error). On rank 0 it writes:

- ``RUN/metrics.jsonl`` (:data:`~masktopo.runs.layout.METRICS_FILE`): one JSON line per completed
  epoch, ``"kind": "epoch"`` and the history row (``epoch``, ``step``, ``train_loss``,
  ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``density``, ``seconds``, the method's
  scalars), and one after the final evaluation, ``"kind": "final"`` (``step``, ``epoch`` and the
  final metrics). Each line is appended with one ``write`` when it happens, so ``tail -f`` follows
  the run; a line cut off by a kill is left out by :func:`masktopo.runs.read_metrics`. A resumed
  run first drops the lines after its checkpoint's step (:func:`truncate_metrics`), so that it
  ends with the lines of an uninterrupted run (but ``seconds``).
- stderr: one plain line per epoch (:func:`epoch_line`) when no progress bar shows; with a bar,
  the bar writes the same line above itself.
- with ``tensorboard``: the scalars through ``torch.utils.tensorboard.SummaryWriter`` into
  ``RUN/tensorboard/`` (:data:`~masktopo.runs.layout.TENSORBOARD_DIR`), at the global step;
- with ``wandb``: the same scalars through ``wandb.log(..., step=step)``.

The scalar names (:func:`epoch_scalars`, :func:`event_scalars`, :func:`final_scalars`):
``train/loss``, ``train/acc``, ``train/lr``, ``val/loss``, ``val/acc``, ``mask/density``,
``time/epoch_seconds``, ``epoch`` and ``method/<name>`` (``method/R_s``, ``method/rate``, ...) per
epoch; ``event/density`` and ``event/<name>`` per mask event; ``final/<metric>`` at the end.
Values that were not measured (NaN) are left out.

:func:`check_packages` fails with one line, before anything is written, when ``tensorboard`` or
``wandb`` is asked for and its package is missing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checks import is_finite_number
from ..errors import MaskFileError, MaskTopoError
from ..files import atomic_write_bytes, os_problem
from ..runs import jsonable
from ..runs.layout import METRICS_FILE, TENSORBOARD_DIR
from .config import TrainConfig

__all__ = [
    "TENSORBOARD_MISSING",
    "WANDB_MISSING",
    "RunLog",
    "check_packages",
    "epoch_line",
    "epoch_scalars",
    "event_scalars",
    "final_scalars",
    "truncate_metrics",
]

TENSORBOARD_MISSING = "--tensorboard needs the tensorboard package: pip install tensorboard"
WANDB_MISSING = "--wandb needs the wandb package: pip install masktopo[wandb]"

#: Scalar names of the history row's fixed keys (the others are the method's scalars).
_EPOCH_TAGS = {
    "epoch": "epoch",
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "lr": "train/lr",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "density": "mask/density",
    "seconds": "time/epoch_seconds",
}
#: Keys of a metrics line that are not logged as scalars.
_NOT_SCALARS = ("kind", "step")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MaskTopoError(TENSORBOARD_MISSING) from None
    return SummaryWriter


def _wandb():
    try:
        import wandb
    except ImportError:
        raise MaskTopoError(WANDB_MISSING) from None
    return wandb


def check_packages(cfg: TrainConfig) -> None:
    """Fail before anything is written when ``cfg`` asks for a logger whose package is missing.

    Raises
    ------
    MaskTopoError
        :data:`TENSORBOARD_MISSING` or :data:`WANDB_MISSING`.
    """
    if cfg.tensorboard:
        _summary_writer()
    if cfg.wandb:
        _wandb()


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one history row, by their logged names (NaN and non-numbers left out)."""
    return {_EPOCH_TAGS.get(k, f"method/{k}"): float(v) for k, v in row.items()
            if k not in _NOT_SCALARS and is_finite_number(v)}  # fmt: skip


def event_scalars(density: float, scalars: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one mask event: ``event/density`` and the method's ``event/<name>``."""
    out = {"event/density": float(density)}
    out.update({f"event/{k}": float(v) for k, v in scalars.items() if is_finite_number(v)})
    return out


def final_scalars(final: Mapping[str, Any]) -> dict[str, float]:
    """The final metrics as ``final/<name>`` (NaN left out)."""
    return {f"final/{k}": float(v) for k, v in final.items() if is_finite_number(v)}


def epoch_line(row: Mapping[str, Any], epochs: int | None = None) -> str:
    """One plain line for a history row, e.g. ``epoch 3/10  step 1263  loss 0.4123  acc
    0.8512  val_acc 0.8401  density 0.0500  R_s 0.3100  12.3 s``."""
    parts = [f"epoch {row['epoch']}" + (f"/{epochs}" if epochs else ""), f"step {row['step']}",
             f"loss {row['train_loss']:.4f}", f"acc {row['train_acc']:.4f}"]  # fmt: skip
    if is_finite_number(row.get("val_acc")):
        parts.append(f"val_acc {row['val_acc']:.4f}")
    parts.append(f"density {row['density']:.4f}")
    if is_finite_number(row.get("R_s")):
        parts.append(f"R_s {row['R_s']:.4f}")
    if is_finite_number(row.get("seconds")):
        parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


def truncate_metrics(run: Path, step: int) -> None:
    """Keep the lines of ``run``'s metrics.jsonl that a checkpoint at ``step`` saw (on resume).

    Dropped: lines of a later step, the ``final`` line (a resumed run evaluates again at its
    end) and lines that are not JSON objects (a line cut off by a kill). The file is rewritten
    atomically, and only when something is dropped.

    Raises
    ------
    MaskFileError
        When the file cannot be read or rewritten.
    """
    path = run / METRICS_FILE
    if not path.exists():
        return
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    kept = []
    for line in raw.split(b"\n"):
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # empty, or cut off by a kill
        if (isinstance(obj, dict) and obj.get("kind") != "final" and is_finite_number(obj.get("step"))
                and obj["step"] <= step):  # fmt: skip
            kept.append(line + b"\n")
    data = b"".join(kept)
    if data != raw:
        atomic_write_bytes(path, data)


class _TensorBoard:
    """Scalars into ``RUN/tensorboard/``; ``purge_step``: hide what a killed run logged from it on
    (a resumed run logs it again)."""

    def __init__(self, run: Path, purge_step: int | None):
        self.writer = _summary_writer()(log_dir=str(run / TENSORBOARD_DIR), purge_step=purge_step)

    def log(self, scalars: Mapping[str, float], step: int, flush: bool) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        if flush:
            self.writer.flush()

    def close(self, ok: bool) -> None:
        self.writer.close()


class _Wandb:
    """Scalars through ``wandb.log``; the wandb run's own files go to ``RUN/wandb/``."""

    def __init__(self, cfg: TrainConfig, run: Path):
        self.wandb = _wandb()
        self.wandb.init(project=cfg.wandb_project, dir=str(run), config=cfg.to_dict(),
                        mode=os.environ.get("WANDB_MODE"))  # fmt: skip

    def log(self, scalars: Mapping[str, float], step: int, flush: bool) -> None:
        self.wandb.log(dict(scalars), step=step)

    def close(self, ok: bool) -> None:
        if ok:
            self.wandb.finish()
        else:
            self.wandb.finish(exit_code=1)


class RunLog:
    """The live logs of one training run (a no-op on ranks other than 0 and without ``out``).

    Parameters
    ----------
    cfg : TrainConfig
        The resolved config: ``epochs``, ``tensorboard``, ``wandb``, ``wandb_project``.
    out : pathlib.Path or None
        The run directory (its run.json written) on the writing rank; None writes no file.
    main : bool
        Rank 0: print the plain lines (also without ``out``).
    resumed_at : int, optional
        The step a resumed run continues from (0: it starts again): metrics.jsonl is cut back to
        it (:func:`truncate_metrics`) and TensorBoard hides what was logged after it.

    Raises
    ------
    MaskTopoError
        A logger's package is missing (:func:`check_packages` says so earlier).
    MaskFileError
        metrics.jsonl cannot be read or rewritten on resume.
    """

    def __init__(self, cfg: TrainConfig, out: Path | None, *, main: bool = True,
                 resumed_at: int | None = None):  # fmt: skip
        self.epochs = cfg.epochs
        self.main = main
        self.path = out / METRICS_FILE if out is not None and main else None
        self._sinks: list[_TensorBoard | _Wandb] = []
        self._closed = False
        if self.path is None:
            return
        if resumed_at is not None:
            truncate_metrics(out, resumed_at)
        try:
            if cfg.tensorboard:
                purge = None if resumed_at is None else (resumed_at + 1 if resumed_at else 0)
                self._sinks.append(_TensorBoard(out, purge))
            if cfg.wandb:
                self._sinks.append(_Wandb(cfg, out))
        except BaseException:
            self.close()
            raise

    def _append(self, obj: Mapping[str, Any]) -> None:
        """Append one line with one ``write`` (a kill leaves whole lines and at most a cut-off
        last one)."""
        if self.path is None:
            return
        data = (json.dumps(jsonable(dict(obj))) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(data)
                while view:  # one write; a short one (rare) is completed
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as e:
            raise MaskFileError(self.path, f"cannot append ({os_problem(e)})") from None

    def _log(self, scalars: Mapping[str, float], step: int, flush: bool = False) -> None:
        for sink in self._sinks:
            sink.log(scalars, int(step), flush)

    def epoch(self, row: Mapping[str, Any], bar=None) -> None:
        """A completed epoch's history row: the plain line on stderr (through ``bar.write``
        when a tqdm bar shows), its metrics.jsonl line, its scalars."""
        if bar is not None:  # above the bar, on stderr (tqdm.write's default is stdout)
            bar.write(epoch_line(row, self.epochs), file=sys.stderr)
        elif self.main:
            print(epoch_line(row, self.epochs), file=sys.stderr, flush=True)
        self._append({"kind": "epoch", **row})
        self._log(epoch_scalars(row), row["step"], flush=True)

    def event(self, kind: str, masks: Mapping[str, Any], step: int,
              scalars: Mapping[str, Any]) -> None:  # fmt: skip
        """A mask event (``masks``: layer -> bool tensor) at ``step``: its density and the
        method's ``scalars``, to TensorBoard and W&B (nothing is computed without them)."""
        if not self._sinks:
            return
        kept = float(sum(m.sum() for m in masks.values()))  # one device sync
        total = sum(m.numel() for m in masks.values())
        self._log(event_scalars(kept / total if total else 1.0, scalars), step)

    def finish(self, step: int, epoch: float, final: Mapping[str, Any]) -> None:
        """The end: the final metrics' line and scalars, then :meth:`close`."""
        self._append({"kind": "final", "step": step, "epoch": epoch, **final})
        self._log(final_scalars(final), step, flush=True)
        self.close(ok=True)

    def close(self, ok: bool = False) -> None:
        """Close the loggers (once); ``ok=False``: the run failed (``wandb.finish(exit_code=1)``)."""
        if self._closed:
            return
        self._closed = True
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close(ok)
