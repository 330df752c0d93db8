"""Checks before a command writes: is ``--out`` free for a new run, or a run to resume; does a
resume keep the run's settings; is an output file neither an input nor part of a run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import MaskFileError
from ..files import check_not_inputs, input_path, writable_file
from .layout import LOCK_FILE, RUN_FILE, run_parts
from .reader import read_run_json

__all__ = ["check_out_dir", "check_output", "check_resumable", "check_same_config", "run_kind"]

#: How messages name the kinds of run.
_NAMES = {"train": "training", "pags": "PAGS", "loop": "own-loop", "prune": "pruning",
          "search": "search", "prune-bench": "pruning-benchmark", "?": "(unreadable)"}  # fmt: skip


def run_kind(path: Path) -> str | None:
    """The kind of the run in folder ``path`` (``"train"``, ``"pags"``), or None when it holds
    no run.json. A run.json that cannot be read counts as a run of unknown kind (``"?"``)."""
    if not (path / RUN_FILE).exists():
        return None
    try:
        return read_run_json(path)["kind"]
    except MaskFileError:
        return "?"


def check_out_dir(
    out: str | os.PathLike,
    kind: str,
    *,
    resume: bool,
    flags: tuple[str, str] = ("--resume", "--out"),
) -> Path:
    """``out`` as a Path, when it can take a new run of ``kind`` (``resume=False``: a new or
    empty folder) or holds a run of ``kind`` to resume (with or without a checkpoint).

    ``flags`` names the resume switch and the output in the messages (``("resume=True", "out")``
    for the Python API).

    Raises
    ------
    MaskFileError
        ``already holds a training run; pass --resume ...``; ``holds a training run; a PAGS run
        needs a new or empty folder ...``; ``is not empty``; ``not a run directory (no
        run.json)``; ``it is a file, not a folder``.
    """
    out = Path(os.fspath(out))
    if out.exists() or out.is_symlink():
        out = input_path(out)  # a symlink loop, a FIFO, ...: one clear line
        if not out.is_dir():
            raise MaskFileError(out, "cannot write a run there: it is a file, not a folder")
    found = run_kind(out) if out.is_dir() else None
    this = _NAMES.get(kind, kind)
    again, dest = flags
    if resume:
        check_resumable(out, kind, again)
        return out
    if found == kind:
        raise MaskFileError(
            out,
            f"already holds a {this} run; pass {again} to continue it, or choose another {dest}",
        )
    if found is not None:
        raise MaskFileError(
            out,
            f"holds a {_NAMES.get(found, found)} run; a {this} run needs a new or empty folder: choose "
            f"another {dest}",
        )
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise MaskFileError(out, f"is not empty; choose an empty or new directory for {dest}")
    return out


def check_resumable(out: Path, kind: str, again: str = "--resume") -> dict:
    """``out``'s checked run.json when it holds a run of ``kind`` that can be resumed
    (``again`` names the resume switch in the messages).

    Raises
    ------
    MaskFileError
        ``--resume: not a run directory (no run.json)``; run.json's own error (not valid JSON,
        no ``config`` ...) followed by ``--resume cannot continue this run``; ``--resume: holds a
        training run, not a PAGS run``.
    """
    if not (out / RUN_FILE).exists():
        raise MaskFileError(out, f"{again}: not a run directory (no {RUN_FILE})")
    try:
        config = read_run_json(out)
        if not isinstance(config.get("config"), dict):
            raise MaskFileError(out / RUN_FILE, "has no 'config' entry (the run's settings)")
    except MaskFileError as e:
        raise MaskFileError(e.path, f"{e.problem}; {again} cannot continue this run") from None
    found = config["kind"]
    if found != kind:
        raise MaskFileError(
            out,
            f"{again}: holds a {_NAMES.get(found, found)} run, not a {_NAMES.get(kind, kind)} run",
        )
    return config


def check_same_config(
    saved: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    allowed: Iterable[str],
    where: str | os.PathLike,
) -> None:
    """Raise unless ``new`` equals ``saved`` in every key but the ``allowed`` ones.

    Raises
    ------
    MaskFileError
        ``<where>: the run was started with other settings: density=0.5 (run: 0.2); only
        device, data_dir may change``.
    """
    allowed = tuple(allowed)
    diffs = [f"{k}={new.get(k)!r} (run: {saved.get(k)!r})"
             for k in sorted(set(saved) | set(new))
             if k not in allowed and saved.get(k) != new.get(k)]  # fmt: skip
    if diffs:
        raise MaskFileError(
            where,
            f"the run was started with other settings: {', '.join(diffs)}; "
            + (f"only {', '.join(allowed)} may change" if allowed else "none may change"),
        )


def _inside_run(path: Path) -> tuple[Path, str] | None:
    """``(run directory, part)`` when ``path`` is one of the files or folders of a run (its
    run.json, events.jsonl, a mask file under masks/, ...), else None."""
    p = Path(os.path.realpath(path))
    for parent in p.parents:
        rel = p.relative_to(parent)
        if (parent / RUN_FILE).is_file() and rel.parts[0] in run_parts():
            return parent, rel.parts[0]
    return None


def check_output(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "the output"
) -> Path:
    """``out`` as a Path, when it can be written (:func:`masktopo.files.writable_file`) and
    writing it replaces no input and no part of a run directory.

    A report or table may be written *into* a run directory (``run/report.html``), but not over
    the files that make the run (``run/run.json``, ``run/events.jsonl``, ``run/masks/...``).

    Raises
    ------
    MaskFileError
        ``is also an input of this command ...``; ``is part of the run directory RUN (its
        run.json) ...``.
    """
    out = writable_file(out, what)
    check_not_inputs(out, inputs)
    found = _inside_run(out)
    if found is not None:
        run, part = found
        raise MaskFileError(
            out,
            f"is part of the run directory {str(run)!r} (its {part}); writing it would damage "
            "the run: choose another output",
        )
    return out
