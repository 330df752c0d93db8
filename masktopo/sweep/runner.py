"""Run a sweep: expand the file, skip what is finished, run the rest, record every outcome.

The sweep's folder::

    OUT/sweep.json              the cells (key, folder, settings, axes) and the command: the union
                                of every sweep file run into OUT (a grown grid adds cells; other
                                [base] settings are refused)
    OUT/sweep.toml              the sweep file last run
    OUT/status.json             key -> state ("done" | "failed"), seconds, error, attempts
    OUT/configs/FOLDER.toml     the config each run was started with (the command's --config)
    OUT/runs/FOLDER/            the run directories (run.json records the cell under "sweep")
    OUT/logs/FOLDER.log         each run's output (appended at every attempt)

A run is finished when the sweep saw it exit 0 or its folder holds a finished run (a
``summary.json`` for ``train``): it is never run again. A run that was interrupted (the sweep
was stopped, killed, or the machine went down) continues from its checkpoint at the next
``masktopo sweep``. A run that failed (non-zero exit) is listed with its one-line error and run
again only with ``retry_failed``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MaskFileError, MaskValidationError
from ..files import atomic_write_bytes, atomic_write_json, writable_folder
from ..options import to_toml
from ..runs import RunLock, read_run_json
from ..runs.layout import RUN_FILE, run_parts
from .config import SweepConfig
from .executors import LocalExecutor, Outcome, SubmititExecutor, Task, python_env
from .spec import Cell, Sweep, load_sweep

__all__ = ["STATUS_FILE", "SWEEP_FILE", "SweepResult", "SweepState", "read_sweep", "run_sweep"]

SWEEP_FORMAT = "masktopo.sweep"
SWEEP_VERSION = 1
SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
SOURCE_FILE = "sweep.toml"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
CONFIGS_DIR = "configs"


@dataclass
class SweepState:
    """A sweep folder as read back: the command, the axes and cells, and each run's status."""

    path: Path
    command: str
    axes: list[str]
    cells: list[Cell]
    status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run_dir(self, cell: Cell) -> Path:
        return self.path / RUNS_DIR / cell.folder

    def state(self, cell: Cell) -> str:
        """``done`` (its run is finished on disk, whatever status.json says), ``failed``,
        ``started`` (a folder exists, unfinished) or ``new``."""
        from .commands import get_command

        st = self.status.get(cell.key, {}).get("state")
        # done when its run is finished on disk: status.json's "done" for a run folder deleted
        # or damaged since would skip it for ever (and summarize would fail on it)
        if get_command(self.command).finished(self.run_dir(cell)):
            return "done"
        if st == "failed":
            return "failed"
        return "started" if (self.run_dir(cell) / RUN_FILE).exists() else "new"


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` did: runs done (before and now), failed (key -> error), still to
    do, and the wall time."""

    path: Path
    total: int
    done: int
    ran: int
    failed: dict[str, str]
    todo: int
    seconds: float


def read_sweep(path: str | os.PathLike) -> SweepState:
    """The sweep folder ``path`` (its sweep.json and status.json).

    Raises
    ------
    MaskFileError
        Not a sweep folder, or a damaged sweep.json / status.json (naming the file).
    """
    p = Path(os.fspath(path))
    f = p / SWEEP_FILE
    if not f.is_file():
        from ..runs import run_kind

        kind = run_kind(p)  # None without run.json (a file, a missing or plain folder)
        if kind not in (None, "?"):  # a run of its own: say what reads it
            raise MaskFileError(p, f"is a {kind} run directory, not a sweep folder (no "
                                   f"{SWEEP_FILE}): masktopo report {p} or masktopo info {p} "
                                   "shows one run")  # fmt: skip
        raise MaskFileError(p, f"not a sweep folder (no {SWEEP_FILE}); run 'masktopo sweep "
                               f"FILE --out {p}' first")  # fmt: skip
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MaskFileError(f, f"is not a readable sweep index ({e})") from None
    command, axes, cells = _check_index(f, data)
    status: dict[str, dict] = {}
    s = p / STATUS_FILE
    if s.exists():
        try:
            status = json.loads(s.read_text(encoding="utf-8"))
            if not isinstance(status, dict):
                raise ValueError("not an object")
            bad = next((k for k, v in status.items() if not isinstance(v, dict)), None)
            if bad is not None:
                raise ValueError(f"the entry of {bad!r} is not an object")
        except (OSError, ValueError) as e:
            raise MaskFileError(s, f"is not a readable sweep status ({e})") from None
    return SweepState(p, command, axes, cells, status)


#: The fields of a cell in sweep.json: name, type, and the type in words.
_CELL_FIELDS = (("key", str, "a string"), ("folder", str, "a string"),
                ("settings", dict, "an object"), ("axes", dict, "an object"))  # fmt: skip


def _check_index(f: Path, data: Any) -> tuple[str, list[str], list[Cell]]:
    """The command, axes and cells of a sweep.json's ``data``, its structure checked: every
    problem is a MaskFileError naming ``f`` and the field. A cell's folder must be one name
    under ``runs/`` (nothing absolute, no ``..``): the sweep never reads outside its folder."""

    def bad(field: str, value: Any, wanted: str) -> MaskFileError:
        shown = f"{value!r}" if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        return MaskFileError(f, f"is not a readable sweep index: {field} is {shown}, not {wanted}")

    if not isinstance(data, dict):
        raise bad("the file", data, "a JSON object")
    if data.get("format") != SWEEP_FORMAT:
        raise bad("format", data.get("format"), repr(SWEEP_FORMAT))
    command, axes, cells = data.get("command"), data.get("axes"), data.get("cells")
    if not isinstance(command, str) or not command:
        raise bad("command", command, "a command name")
    if not isinstance(axes, list) or not all(isinstance(a, str) and a for a in axes):
        raise bad("axes", axes, "a list of axis names")
    if not isinstance(cells, list):
        raise bad("cells", cells, "a list of cells")
    out, keys = [], set()
    for i, c in enumerate(cells):
        if not isinstance(c, dict):
            raise bad(f"cells[{i}]", c, "an object")
        for name, kind, wanted in _CELL_FIELDS:
            if not isinstance(c.get(name), kind) or (kind is str and not c[name]):
                raise bad(f"cells[{i}].{name}", c.get(name), wanted)
        folder = c["folder"]
        if folder in (".", "..") or "/" in folder or "\\" in folder:
            raise MaskFileError(f, f"cells[{i}].folder {folder!r} is not a folder name under "
                                   f"{RUNS_DIR}/ (absolute or with '..' or '/'): a sweep reads "
                                   "no run outside its folder")  # fmt: skip
        if c["key"] in keys:
            raise MaskFileError(f, f"cells[{i}].key {c['key']!r} is listed twice")
        keys.add(c["key"])
        out.append(Cell.from_dict(c))
    return command, list(axes), out


def _merge(out: Path, sweep: Sweep) -> SweepState:
    """The sweep state of ``out`` with ``sweep``'s cells added (a new folder: just these)."""
    if (out / SWEEP_FILE).exists():
        state = read_sweep(out)
        if state.command != sweep.command:
            raise MaskValidationError(f"{out}: holds a sweep of '{state.command}' runs; this file "
                                      f"sweeps '{sweep.command}': choose another --out")  # fmt: skip
        _check_same_base(out, state, sweep)
        known = {c.key for c in state.cells}
        state.cells += [c for c in sweep.cells if c.key not in known]
        state.axes += [a for a in sweep.axes if a not in state.axes]
        return state
    writable_folder(out, "a sweep")  # one line when it is a file, say
    if out.exists() and any(out.iterdir()):
        raise MaskFileError(out, "is not empty and not a sweep folder: choose another --out")
    return SweepState(out, sweep.command, list(sweep.axes), list(sweep.cells))


def _check_same_base(out: Path, state: SweepState, sweep: Sweep) -> None:
    """``sweep`` may grow the sweep in ``out`` (more values of its axes, new axes), never change
    a setting its runs share: a setting that is an axis of neither must be the same (or unset)
    in both, or runs of different settings would be summarized as one group."""
    if not state.cells:
        return
    axes = set(state.axes) | set(sweep.axes)
    before = {k: v for k, v in state.cells[0].settings.items() if k not in axes}
    now = {k: v for k, v in sweep.base.items() if k not in axes}
    unset = object()

    def shown(v: Any) -> str:
        return "not set" if v is unset else json.dumps(v)

    differ = [f"{k} = {shown(before.get(k, unset))} there, {shown(now.get(k, unset))} here"
              for k in sorted(before.keys() | now.keys())
              if before.get(k, unset) != now.get(k, unset)]  # fmt: skip
    if differ:
        raise MaskValidationError(f"{out}: holds a sweep of other settings than {sweep.source}: "
                                  f"{'; '.join(differ)}; a sweep folder grows only by cells of "
                                  "the same [base] (more seeds, another method): choose another "
                                  "--out")  # fmt: skip


def _write_index(state: SweepState) -> None:
    atomic_write_json(state.path / SWEEP_FILE, {
        "format": SWEEP_FORMAT, "version": SWEEP_VERSION, "command": state.command,
        "axes": state.axes, "cells": [c.to_dict() for c in state.cells],
    })  # fmt: skip


def _prepare_folder(run: Path) -> bool:
    """True when ``run`` holds a run to continue; False when a new run starts there. A folder a
    run left before writing run.json (only run files of a run's layout) is emptied."""
    if (run / RUN_FILE).exists():
        return True
    if run.exists():
        known = run_parts()
        for entry in run.iterdir():
            if entry.name not in known:
                raise MaskFileError(run, f"holds {entry.name!r}, which no run writes; move it "
                                         "away, the sweep will then start this run afresh")  # fmt: skip
        shutil.rmtree(run)
    return False


def _record_cell(run: Path, cell: Cell, sweep_dir: Path) -> None:
    """Add the cell to the run's run.json (``"sweep": {"key", "axes", "settings", "folder"}``)."""
    try:
        meta = read_run_json(run)
    except MaskFileError:
        return
    meta["sweep"] = {"key": cell.key, "axes": cell.axes, "settings": cell.settings,
                     "sweep": str(sweep_dir)}  # fmt: skip
    atomic_write_json(run / RUN_FILE, meta)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler stopping the sweep) ends the sweep as Ctrl-C does: runs interrupted,
    nothing recorded as failed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    # A sweep started in the background (``&``) inherits SIGINT ignored, and so would every run
    # it starts: catch it here, so that the runs (a caught signal is reset at exec) stop on
    # SIGINT as they do in a terminal.
    old_int = signal.getsignal(signal.SIGINT)
    if old_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        if old_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, old_int)


def run_sweep(
    sweep_file: str | os.PathLike,
    out: str | os.PathLike,
    config: SweepConfig | None = None,
    *,
    log=None,
    executor=None,
) -> SweepResult:
    """Run every unfinished run of ``sweep_file`` into the sweep folder ``out``.

    Parameters
    ----------
    sweep_file : path
        The sweep file (:mod:`masktopo.sweep.spec`); every cell is checked before anything runs.
    out : path
        The sweep folder: new, empty, or one this (or a grown) sweep file ran into before.
    config : SweepConfig, optional
        Jobs, executor, retry of failed runs, limit, dry run.
    log : file, optional
        Where progress lines go (default stderr): the plan, one line per run ending (done or
        failed, with the runs done, failed, and the ETA), the failures at the end.
    executor : optional
        An executor object (tests); default from ``config``.

    Returns
    -------
    SweepResult

    Raises
    ------
    MaskFileError, MaskValidationError
        A bad sweep file or cell (nothing written), an ``out`` that is something else, or a
        sweep folder another ``masktopo sweep`` is running in.
    KeyboardInterrupt
        Ctrl-C or SIGTERM: the running runs are interrupted; the next call continues them.
    """
    config = config or SweepConfig()
    log = log or sys.stderr
    sweep = load_sweep(sweep_file)
    out = Path(os.fspath(out))
    state = _merge(out, sweep)
    kinds = {c.key: state.state(c) for c in state.cells}
    this = [c for c in sweep.cells]
    done0 = sum(kinds[c.key] == "done" for c in this)
    failed0 = [c for c in this if kinds[c.key] == "failed"]
    todo = [c for c in this if kinds[c.key] in ("new", "started")
            or (config.retry_failed and kinds[c.key] == "failed")]  # fmt: skip
    if config.limit is not None:
        todo = todo[: config.limit]

    def say(text: str) -> None:
        print(f"sweep: {text}", file=log, flush=True)

    if config.dry_run:
        for c in this:
            say(f"{kinds[c.key]:8s} {c.folder}")
        return SweepResult(out, len(this), done0, 0, {c.key: state.status[c.key].get("error", "")
                                                       for c in failed0}, len(todo), 0.0)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out), _sigterm_interrupts():
        _write_index(state)
        atomic_write_bytes(out / SOURCE_FILE, Path(sweep_file).read_bytes())
        skipped = (
            ""
            if config.retry_failed or not failed0
            else (f", {len(failed0)} failed before (skipped; --retry-failed runs them again)")
        )
        say(f"{len(this)} runs of '{sweep.command}': {done0} done before{skipped}; "
            f"{len(todo)} to run, {config.jobs} at once ({config.executor})")  # fmt: skip
        spec = sweep.spec
        tasks, by_key = [], {}
        env = python_env()
        for c in todo:
            run = state.run_dir(c)
            resume = _prepare_folder(run)
            cfg_file = out / CONFIGS_DIR / f"{c.folder}.toml"
            if not resume or not cfg_file.exists():
                cfg = spec.build(c.settings, where=f"cell {c.folder}")
                cfg_file.parent.mkdir(parents=True, exist_ok=True)
                text = to_toml(cfg, table=spec.table,
                               header=f"sweep {out} cell {c.folder} (key {c.key})")  # fmt: skip
                atomic_write_bytes(cfg_file, text.encode("utf-8"))
            run.parent.mkdir(parents=True, exist_ok=True)
            argv = spec.argv(cfg_file, run, resume=resume)
            tasks.append(Task(c.key, argv, out / LOGS_DIR / f"{c.folder}.log", env))
            by_key[c.key] = c
        if executor is None:
            executor = _make_executor(config, out)
        t0 = time.monotonic()
        counts = {"done": done0, "failed": 0, "ran": 0}
        failed: dict[str, str] = {c.key: state.status[c.key].get("error", "")
                                  for c in failed0 if not config.retry_failed}  # fmt: skip
        durations: list[float] = []

        def on_start(task: Task) -> None:
            st = state.status.setdefault(task.key, {})
            st["attempts"] = int(st.get("attempts", 0)) + 1
            st["started"] = _now()
            atomic_write_json(out / STATUS_FILE, state.status)  # survives a killed sweep

        def on_done(o: Outcome) -> None:
            cell = by_key[o.key]
            if o.interrupted and o.returncode != 0:
                return  # continues next time
            st = state.status.setdefault(o.key, {})
            st.update(seconds=round(o.seconds, 3), finished=_now())
            counts["ran"] += 1
            if o.returncode == 0:
                st.update(state="done", error="")
                counts["done"] += 1
                durations.append(o.seconds)
                _record_cell(state.run_dir(cell), cell, out)
                what = "done  "
            else:
                st.update(state="failed", error=o.error, returncode=o.returncode)
                counts["failed"] += 1
                failed[o.key] = o.error
                what = "FAILED"
            atomic_write_json(out / STATUS_FILE, state.status)
            left = len(tasks) - counts["ran"]
            eta = ""
            if left and durations:
                per = sum(durations) / len(durations)
                eta = f", ETA {_minutes(per * left / max(1, min(config.jobs, left)))}"
            tail = f": {o.error}" if o.returncode else ""
            say(f"[{counts['done']}/{len(this)} done, {counts['failed']} failed{eta}] {what} "
                f"{cell.folder} ({_minutes(o.seconds)}){tail}")  # fmt: skip

        executor.run(tasks, on_start, on_done)
        atomic_write_json(out / STATUS_FILE, state.status)
    seconds = time.monotonic() - t0
    if failed:
        say(f"{len(failed)} failed (logs in {out / LOGS_DIR}):")
        for key, err in failed.items():
            say(f"  {_folder(state, key)}: {err}")
    left = len(this) - counts["done"] - len(failed)
    say(f"{counts['done']}/{len(this)} done, {len(failed)} failed, {left} not run; "
        f"{_minutes(seconds)}")  # fmt: skip
    return SweepResult(out, len(this), counts["done"], counts["ran"], failed, left, seconds)


def _folder(state: SweepState, key: str) -> str:
    return next((c.folder for c in state.cells if c.key == key), key)


def _make_executor(config: SweepConfig, out: Path):
    if config.executor == "local":
        return LocalExecutor(config.jobs)
    cluster = "local" if config.executor == "submitit-local" else "slurm"
    return SubmititExecutor(out / "submitit", jobs=config.jobs, partition=config.partition,
                            time_min=config.time_min, gpus_per_job=config.gpus_per_job,
                            cpus_per_job=config.cpus_per_job, mem_gb=config.mem_gb,
                            cluster=cluster)  # fmt: skip
